"""A quick trainer that honours the trainer contract through ``kubenas_trainer.report``, as a
user's own image would. It does not train a network (named here as the stand-in it is): each
epoch sleeps briefly and the accuracy follows a curve set by the ``quality`` parameter, so the
operator's scheduling, promotion, restart and metrics paths can be tested in seconds. Real
training on real data is exercised by the digits experiment in the same suite.
"""

import json
import os
import sys
import time
from pathlib import Path

from kubenas_trainer.report import Reporter

architecture = json.loads(os.environ["KUBENAS_ARCHITECTURE"])
target = int(os.environ.get("KUBENAS_EPOCHS", "1"))
checkpoint_dir = Path(os.environ["KUBENAS_CHECKPOINT_DIR"])
resume = os.environ.get("KUBENAS_RESUME_FROM")
ledger = os.environ.get("LEDGER")

if architecture.get("crash"):
    print("simulated crash: the architecture asked for it", file=sys.stderr)
    sys.exit(7)

done = json.loads(Path(resume).read_text())["epoch"] if resume else 0
reporter = Reporter.from_env()
reporter.start()
quality = float(architecture["quality"]) / 10
value = quality * (1 - 0.5**done)
for epoch in range(done + 1, target + 1):
    time.sleep(float(os.environ.get("EPOCH_SECONDS", "0.3")))
    value = quality * (1 - 0.5**epoch)
    reporter.epoch(epoch, {"val_accuracy": value})
    if ledger:
        with open(ledger, "a") as f:
            f.write(f"{os.environ['KUBENAS_TRIAL']} {epoch}\n")
checkpoint_dir.mkdir(parents=True, exist_ok=True)
checkpoint = checkpoint_dir / "checkpoint.pt"
checkpoint.write_text(json.dumps({"epoch": max(done, target)}))
reporter.final(
    {"val_accuracy": value, "test_accuracy": value, "params": 1000.0}, checkpoint=checkpoint
)
