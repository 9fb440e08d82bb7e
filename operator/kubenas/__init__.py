"""kubenas: Kubernetes-native neural architecture search.

The control-plane package: experiment model, search spaces, strategies, schedulers, the pure
decision engine and the runtimes. It never imports torch or the trainer.
"""

__version__ = "0.1.0"
