"""Train the spiral classifier: `python -m spirals.train --config configs/default.json [--epochs N] [--lr X]`.

Reports loss and accuracy every epoch, checkpoints every `checkpoint_every` epochs (and when TensorFleet asks it
to stop, e.g. on pause), resumes from the last checkpoint when the job continues, and writes its results to the
output dir: model.pt (the weights), metrics.json and loss_curve.csv, which become the job's artifacts."""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
from torch import nn

from spirals import fleet
from spirals.config import load
from spirals.data import spirals, split
from spirals.model import accuracy, mlp


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="spirals.train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/default.json")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--hidden", type=int)
    args = parser.parse_args(argv)
    config = load(args.config, epochs=args.epochs, lr=args.lr, hidden=args.hidden)
    print(f"training on {config.samples} points: {config}", flush=True)

    torch.manual_seed(config.seed)
    (train_x, train_y), (test_x, test_y) = split(*spirals(config.samples, config.noise, config.seed))
    model = mlp(config.hidden, config.layers)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = nn.CrossEntropyLoss()

    start, curve = 0, []
    resumed = fleet.resume_checkpoint()
    if resumed is not None:
        state = torch.load(resumed, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, curve = state["epoch"] + 1, state["curve"]
        print(f"resumed from {resumed.name} at epoch {start}", flush=True)

    started = time.monotonic()
    for epoch in range(start, config.epochs):
        model.train()
        order = torch.randperm(len(train_x))
        total = 0.0
        for i in range(0, len(order), config.batch_size):
            batch = order[i : i + config.batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(train_x[batch]), train_y[batch])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        curve.append(total / len(train_x))
        test_acc = accuracy(model, test_x, test_y)
        fleet.report(epoch, loss=curve[-1], test_accuracy=test_acc)
        fleet.progress((epoch + 1) / config.epochs)
        stopping = fleet.stop_requested()
        if (epoch + 1) % config.checkpoint_every == 0 or stopping:
            path = fleet.checkpoint_dir() / "last.pt"
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch, "curve": curve}
            torch.save(state, path)
            fleet.save_checkpoint(path, epoch)
        if stopping:
            raise fleet.Stopped(f"paused at epoch {epoch}: a checkpoint was saved")

    out = fleet.output_dir()
    torch.save(model.state_dict(), out / "model.pt")
    result = {"test_accuracy": accuracy(model, test_x, test_y), "final_loss": curve[-1], "epochs": config.epochs}
    result["seconds"] = round(time.monotonic() - started, 2)
    (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "loss_curve.csv").write_text("epoch,loss\n" + "".join(f"{i},{v:.6f}\n" for i, v in enumerate(curve)))
    print(f"test accuracy {result['test_accuracy']:.3f} after {config.epochs} epochs; outputs in {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
