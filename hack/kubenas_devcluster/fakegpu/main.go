// Command fakegpu is a FAKE NVIDIA device plugin for the dev cluster's real kubelet.
//
// The machines that run the e2e suite have no GPUs. This plugin advertises N devices of
// nvidia.com/gpu through the kubelet's device-plugin API (v1beta1), and on Allocate hands a
// container the indices it was given in CUDA_VISIBLE_DEVICES and made-up UUIDs in
// NVIDIA_VISIBLE_DEVICES, as NVIDIA's plugin and container toolkit do. No device node is
// mounted: nothing real is behind the name.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// version is stamped at build time with a hash of this file, so a changed plugin is rebuilt.
var version = "dev"

const resourceName = "nvidia.com/gpu"

type plugin struct {
	pluginapi.UnimplementedDevicePluginServer
	devices []*pluginapi.Device
}

func (p *plugin) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return &pluginapi.DevicePluginOptions{}, nil
}

// ListAndWatch sends the (never changing) device list once, then holds the stream open.
func (p *plugin) ListAndWatch(_ *pluginapi.Empty, stream pluginapi.DevicePlugin_ListAndWatchServer) error {
	if err := stream.Send(&pluginapi.ListAndWatchResponse{Devices: p.devices}); err != nil {
		return err
	}
	<-stream.Context().Done()
	return nil
}

func (p *plugin) Allocate(_ context.Context, request *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	response := &pluginapi.AllocateResponse{}
	for _, container := range request.ContainerRequests {
		indices := append([]string(nil), container.DevicesIds...)
		sort.Strings(indices)
		uuids := make([]string, len(indices))
		for i, index := range indices {
			uuids[i] = "GPU-fake-" + index
		}
		response.ContainerResponses = append(response.ContainerResponses, &pluginapi.ContainerAllocateResponse{
			Envs: map[string]string{
				"CUDA_VISIBLE_DEVICES":   strings.Join(indices, ","),
				"NVIDIA_VISIBLE_DEVICES": strings.Join(uuids, ","),
			},
		})
	}
	return response, nil
}

func (p *plugin) PreStartContainer(context.Context, *pluginapi.PreStartContainerRequest) (*pluginapi.PreStartContainerResponse, error) {
	return &pluginapi.PreStartContainerResponse{}, nil
}

// serve listens on the plugin's socket and registers it with the kubelet.
func serve(p *plugin, dir, socketName string) (*grpc.Server, error) {
	socket := filepath.Join(dir, socketName)
	_ = os.Remove(socket)
	listener, err := net.Listen("unix", socket)
	if err != nil {
		return nil, err
	}
	server := grpc.NewServer()
	pluginapi.RegisterDevicePluginServer(server, p)
	go func() { _ = server.Serve(listener) }()

	conn, err := grpc.NewClient("unix://"+filepath.Join(dir, "kubelet.sock"),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		server.Stop()
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = pluginapi.NewRegistrationClient(conn).Register(ctx, &pluginapi.RegisterRequest{
		Version:      pluginapi.Version,
		Endpoint:     socketName,
		ResourceName: resourceName,
		Options:      &pluginapi.DevicePluginOptions{},
	})
	if err != nil {
		server.Stop()
		return nil, err
	}
	return server, nil
}

func main() {
	count := flag.Int("devices", 2, "how many fake GPUs to advertise")
	dir := flag.String("plugin-dir", pluginapi.DevicePluginPath, "the kubelet's device-plugin folder")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println("kubenas-fakegpu", version)
		return
	}
	p := &plugin{}
	for i := 0; i < *count; i++ {
		p.devices = append(p.devices, &pluginapi.Device{ID: fmt.Sprint(i), Health: pluginapi.Healthy})
	}
	socketName := "kubenas-fakegpu.sock"
	// The kubelet wipes this folder when it (re)starts: serve and register again whenever
	// our socket is gone, as real device plugins do.
	var server *grpc.Server
	for {
		if _, err := os.Stat(filepath.Join(*dir, socketName)); server == nil || err != nil {
			if server != nil {
				server.Stop()
				server = nil
			}
			started, err := serve(p, *dir, socketName)
			if err != nil {
				log.Printf("registering with the kubelet: %v (retrying)", err)
			} else {
				log.Printf("serving %d fake %s devices", *count, resourceName)
				server = started
			}
		}
		time.Sleep(time.Second)
	}
}
