"""kubenas_trainer: trains one NAS trial and reports its metrics.

The same code runs as a local subprocess of ``kubenas run`` and as a trial Job's container in a
cluster; every setting comes from ``KUBENAS_*`` environment variables (flags override them). See
docs/trainer-contract.md. Importing this package does not import torch, so a user's own trainer can
use :mod:`kubenas_trainer.report` with any framework.
"""

__version__ = "0.1.0"
