"""A user's own trainer honouring the trainer contract with plain env and a few lines of JSON.

Parameters of the custom space steer it: ``mode`` = ok | crash | hang, ``quality`` a number.
"""

import json
import os
import sys
import time

arch = json.loads(os.environ["KUBENAS_ARCHITECTURE"])
epochs = int(os.environ.get("KUBENAS_EPOCHS", "1"))
report = os.environ["KUBENAS_REPORT"].removeprefix("jsonl:")

if arch["mode"] == "crash":
    print("CUDA error: an illegal memory access was encountered (pretend)", file=sys.stderr)
    sys.exit(3)
if arch["mode"] == "hang":
    time.sleep(600)

value = float(arch["quality"]) / 10
with open(report, "a") as f:
    for epoch in range(1, epochs + 1):
        f.write(
            json.dumps(
                {
                    "event": "epoch",
                    "epoch": epoch,
                    "metrics": {"val_accuracy": value * epoch / epochs},
                }
            )
            + "\n"
        )
summary = {"event": "final", "metrics": {"val_accuracy": value, "params": 1000}, "checkpoint": None}
with open(os.environ["KUBENAS_TERMINATION_MESSAGE_PATH"], "w") as f:
    json.dump(summary, f)
