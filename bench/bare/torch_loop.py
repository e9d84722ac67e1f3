"""The default model and recipe as PyTorch's MNIST example (pytorch/examples, mnist/main.py)
writes a training loop: no pipeline, nothing from ``stages``. bench/fair_bench.py times it
against the train stage.

An ``nn.Sequential`` of the default architecture (params.yaml's ``model``), a ``DataLoader``
over the prepared arrays with ``shuffle=True``, ``torch.optim.AdamW`` (the recipe's epsilon and
decay) with ``OneCycleLR`` (warm-up then cosine), ``model.train()`` / ``optimizer.zero_grad()`` /
``loss.backward()`` / ``optimizer.step()`` per batch and a ``torch.no_grad()`` validation pass
after each epoch. ``--deterministic`` adds what the pipeline needs for bitwise reruns
(``torch.manual_seed``, ``torch.use_deterministic_algorithms(True)``).

    .venv/bin/python bench/bare/torch_loop.py data/prepared --epochs 5 --threads 2

Prints one JSON line: fit_seconds (the epochs' wall time, validation included), parameters,
val_accuracy.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 5, bias=False), nn.MaxPool2d(2), nn.BatchNorm2d(16, eps=1e-5, momentum=0.1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, bias=False), nn.MaxPool2d(2), nn.BatchNorm2d(32, eps=1e-5, momentum=0.1), nn.ReLU(),
        nn.Flatten(), nn.Dropout(0.25), nn.Linear(32 * 5 * 5, 128), nn.ReLU(), nn.Dropout(0.25), nn.Linear(128, 10),
    )


def tensors(prepared: str, split: str) -> TensorDataset:
    images = torch.from_numpy(np.load(f"{prepared}/{split}_images.npy")).permute(0, 3, 1, 2).contiguous()
    return TensorDataset(images, torch.from_numpy(np.load(f"{prepared}/{split}_labels.npy")).long())


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    arguments.add_argument("prepared", help="the prepared data folder (data/prepared)")
    arguments.add_argument("--epochs", type=int, default=5)
    arguments.add_argument("--threads", type=int, default=2)
    arguments.add_argument("--deterministic", action="store_true")
    args = arguments.parse_args()
    torch.set_num_threads(args.threads)
    if args.deterministic:
        torch.manual_seed(1)
        torch.use_deterministic_algorithms(True)
    train = DataLoader(tensors(args.prepared, "train"), batch_size=128, shuffle=True)
    val = DataLoader(tensors(args.prepared, "val"), batch_size=1000)
    net = model()
    optimizer = torch.optim.AdamW(net.parameters(), lr=0.005, weight_decay=1e-4, eps=1e-8)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.005, total_steps=args.epochs * len(train),
                                                    pct_start=0.2, anneal_strategy="cos")
    loss_function = nn.CrossEntropyLoss()
    started = time.perf_counter()
    for _ in range(args.epochs):
        net.train()
        for images, labels in train:
            optimizer.zero_grad()
            loss = loss_function(net(images), labels)
            loss.backward()
            optimizer.step()
            scheduler.step()
        net.eval()
        correct = 0
        with torch.no_grad():
            for images, labels in val:
                correct += int((net(images).argmax(1) == labels).sum())
    seconds = time.perf_counter() - started
    print(json.dumps({"fit_seconds": round(seconds, 3), "parameters": sum(p.numel() for p in net.parameters()),
                      "val_accuracy": round(correct / len(val.dataset), 4)}))


if __name__ == "__main__":
    main()
