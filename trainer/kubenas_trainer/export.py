"""Export a trained network for use outside kubenas: TorchScript and ONNX files, the weights and a
few lines of PyTorch that rebuild the module. Each exported file is loaded back and run against the
model on a fixed batch, so a wrong export fails here, where it is made, not where it is served.

``python -m kubenas_trainer.export --checkpoint runs/t1/checkpoint.pt -o model.onnx --format onnx``
"""

import argparse
import copy
import json
import pickle
import shutil
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import onnx
import onnxruntime
import torch
from torch import nn

from kubenas.api.builtin_trainer import EXPORT_DIR, EXPORT_FILES
from kubenas_trainer.checkpoint import load_checkpoint
from kubenas_trainer.config import ConfigError
from kubenas_trainer.models import build_model

STATE_DICT_FILE = "model.state_dict.pt"
ARCHITECTURE_FILE = "architecture.json"
REBUILD_FILE = "rebuild.py"
MANIFEST_FILE = "export.json"
CHECK_BATCH = 4
# Opset 17 has every op these families use, and onnxruntime has run it for years.
ONNX_OPSET = 17
# torch warns that TorchScript and its ONNX exporter are on their way out. They still write the
# files asked for here, and the replacement (dynamo) exporter needs onnxscript, not a dependency.
TORCH_DEPRECATIONS = (
    r"`torch\.jit\.\w+` is deprecated|You are using the legacy TorchScript-based ONNX export"
    r"|The feature will be removed"
)

REBUILD_SOURCE = f'''\
"""Rebuild the exported kubenas network in plain PyTorch: ``load()`` returns it, in eval mode."""

import json
from pathlib import Path

import torch
from torch import nn

from kubenas_trainer.models import build_model

HERE = Path(__file__).resolve().parent


def load() -> nn.Module:
    spec = json.loads((HERE / "{ARCHITECTURE_FILE}").read_text())
    model = build_model(
        spec["family"], spec["architecture"], tuple(spec["sample_shape"]), spec["num_classes"]
    )
    state = torch.load(HERE / "{STATE_DICT_FILE}", map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()


if __name__ == "__main__":
    model = load()
    print(f"{{sum(p.numel() for p in model.parameters())}} parameters")
'''


class ExportError(RuntimeError):
    """An exported file that does not compute what the model computes."""


def export_model(
    model: nn.Module,
    *,
    family: str,
    architecture: dict[str, Any],
    sample_shape: tuple[int, ...],
    num_classes: int,
    out_dir: Path,
    formats: Sequence[str] = ("torchscript", "onnx"),
    tolerance: float = 1e-4,
    seed: int = 0,
) -> dict[str, Any]:
    """Write ``model``'s weights, architecture, ``rebuild.py`` and each of ``formats`` into
    ``out_dir``, check each format's logits against the model's on a seeded random batch, and
    write and return the ``export.json`` manifest. The caller's model is left as it was (device,
    layout, dtype and training mode); raises :class:`ExportError` when a format differs from the
    model by more than ``tolerance``."""
    unknown = sorted(set(formats) - EXPORT_FILES.keys())
    if unknown:
        raise ValueError(f"unknown export format {unknown}; known: {sorted(EXPORT_FILES)}")
    cpu_model = copy.deepcopy(model).to("cpu", torch.float32)
    cpu_model = cpu_model.to(memory_format=torch.contiguous_format).eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(cpu_model.state_dict(), out_dir / STATE_DICT_FILE)
    spec = {
        "family": family,
        "architecture": architecture,
        "sample_shape": list(sample_shape),
        "num_classes": num_classes,
    }
    (out_dir / ARCHITECTURE_FILE).write_text(json.dumps(spec, indent=2) + "\n")
    (out_dir / REBUILD_FILE).write_text(REBUILD_SOURCE)

    generator = torch.Generator().manual_seed(seed)
    batch = torch.randn((CHECK_BATCH, *sample_shape), generator=generator)
    with torch.no_grad():
        expected = cpu_model(batch)
    checked: dict[str, Any] = {}
    for name in formats:
        path = out_dir / EXPORT_FILES[name]
        if name == "torchscript":
            logits = _export_torchscript(cpu_model, batch, path)
        else:
            logits = _export_onnx(cpu_model, batch, path)
        difference = (logits - expected).abs().max().item()
        if not difference <= tolerance:  # NaN fails too
            raise ExportError(
                f"{name} export {path} differs from the model by {difference:.3g} "
                f"(max abs logit difference; tolerance {tolerance:g})"
            )
        checked[name] = {"file": path.name, "max_abs_diff": difference, "tolerance": tolerance}
        if name == "onnx":
            checked[name]["opset"] = ONNX_OPSET
    manifest = {"batch_size": CHECK_BATCH, "seed": seed, "formats": checked}
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


@contextmanager
def _quiet_torch_deprecations() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", TORCH_DEPRECATIONS, DeprecationWarning)
        warnings.filterwarnings("ignore", TORCH_DEPRECATIONS, FutureWarning)
        yield


def _export_torchscript(model: nn.Module, batch: torch.Tensor, path: Path) -> torch.Tensor:
    """Trace (the cells' Python wiring does not script), save, and run the file as loaded."""
    with _quiet_torch_deprecations(), torch.no_grad():
        traced = torch.jit.trace(model, batch)  # type: ignore[no-untyped-call]
        traced.save(str(path))
        loaded = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
        logits: torch.Tensor = loaded(batch)
    return logits


def _export_onnx(model: nn.Module, batch: torch.Tensor, path: Path) -> torch.Tensor:
    """Export with a dynamic batch axis, validate the graph, and run it in onnxruntime."""
    with _quiet_torch_deprecations():
        torch.onnx.export(
            model,
            (batch,),
            str(path),
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=ONNX_OPSET,
            dynamo=False,  # the TorchScript-based exporter, which needs no onnxscript
        )
    onnx.checker.check_model(str(path))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"input": batch.numpy()})
    return torch.from_numpy(logits)


def parse_sample_shape(text: str) -> tuple[int, ...]:
    """``C,H,W`` or ``C,L`` with positive sizes."""
    parts = text.split(",")
    if len(parts) not in (2, 3) or not all(part.strip().isdigit() for part in parts):
        raise argparse.ArgumentTypeError(f"want C,H,W or C,L, got {text!r}")
    shape = tuple(int(part) for part in parts)
    if min(shape) < 1:
        raise argparse.ArgumentTypeError(f"sizes must be >= 1, got {text!r}")
    return shape


def positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"want a whole number >= 1, got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubenas_trainer.export",
        description="Export a trial checkpoint's network as TorchScript and ONNX, checked.",
    )
    parser.add_argument(
        "--checkpoint", type=Path, required=True, metavar="PATH", help="a trial's checkpoint.pt"
    )
    parser.add_argument(
        "--sample-shape",
        type=parse_sample_shape,
        metavar="C,H,W",
        help="C,H,W or C,L of one sample (default: from the checkpoint)",
    )
    parser.add_argument(
        "--classes", type=positive, metavar="N", help="classes (default: from the checkpoint)"
    )
    parser.add_argument("--format", choices=(*EXPORT_FILES, "all"), default="all")
    parser.add_argument(
        "--out-dir",
        type=Path,
        metavar="DIR",
        help="where to write (default: export/ next to the checkpoint)",
    )
    parser.add_argument(
        "-o", dest="output", type=Path, metavar="FILE", help="also copy the --format file here"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status 0, 2 for a bad flag or checkpoint, 1 for an export that fails its check."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.output is not None and args.format == "all":
        parser.error("-o needs a single --format: onnx or torchscript")
    path: Path = args.checkpoint
    try:
        state = load_checkpoint(path)
    except (OSError, RuntimeError, pickle.UnpicklingError) as error:
        parser.error(f"--checkpoint {path}: cannot load: {error}")
    missing = [key for key in ("family", "architecture", "model") if key not in state]
    if missing:
        parser.error(f"--checkpoint {path}: not a trial checkpoint (no {', '.join(missing)})")
    sample_shape = args.sample_shape or tuple(state.get("sample_shape", ()))
    num_classes = args.classes or state.get("num_classes")
    if not sample_shape or num_classes is None:
        parser.error(f"--checkpoint {path} does not record them: give --sample-shape and --classes")
    try:
        model = build_model(state["family"], state["architecture"], sample_shape, num_classes)
        model.load_state_dict(state["model"])
    except (ConfigError, RuntimeError) as error:
        parser.error(f"the checkpoint's network cannot be rebuilt: {error}")
    out_dir: Path = args.out_dir or path.parent / EXPORT_DIR
    formats = tuple(EXPORT_FILES) if args.format == "all" else (args.format,)
    try:
        manifest = export_model(
            model,
            family=state["family"],
            architecture=state["architecture"],
            sample_shape=sample_shape,
            num_classes=num_classes,
            out_dir=out_dir,
            formats=formats,
        )
    except ExportError as error:
        print(f"kubenas_trainer.export: error: {error}", file=sys.stderr)
        return 1
    for name in (STATE_DICT_FILE, ARCHITECTURE_FILE, REBUILD_FILE):
        print(f"wrote {out_dir / name}")
    for name, checked in manifest["formats"].items():
        difference = checked["max_abs_diff"]
        print(f"wrote {out_dir / checked['file']} ({name}, max abs difference {difference:.2g})")
    print(f"wrote {out_dir / MANIFEST_FILE}")
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out_dir / EXPORT_FILES[args.format], args.output)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
