"""The default model and recipe as Keras' getting-started guide writes a training script: no
pipeline, nothing from ``stages``. bench/fair_bench.py times it against the train stage.

A ``keras.Sequential`` of the default architecture (params.yaml's ``model``), ``compile`` with
``keras.optimizers.AdamW`` (the recipe's epsilon and decay) on Keras' own warm-up + cosine
schedule, then ``Model.fit`` on the prepared arrays with ``shuffle=True`` and validation after each
epoch, at Keras' defaults otherwise. ``--deterministic`` adds what the pipeline needs for
bitwise reruns (``keras.utils.set_random_seed``, ``enable_op_determinism``).

    .venv/bin/python bench/bare/keras_fit.py data/prepared --epochs 5 --threads 2

Prints one JSON line: fit_seconds (``Model.fit`` wall time, validation included), parameters
(trainable, as the pipeline counts them),
val_accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402


def model() -> keras.Model:
    layers = keras.layers
    return keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        layers.Conv2D(16, 5, use_bias=False), layers.MaxPooling2D(2),
        layers.BatchNormalization(momentum=0.9, epsilon=1e-5), layers.Activation("relu"),
        layers.Conv2D(32, 3, use_bias=False), layers.MaxPooling2D(2),
        layers.BatchNormalization(momentum=0.9, epsilon=1e-5), layers.Activation("relu"),
        layers.Flatten(), layers.Dropout(0.25), layers.Dense(128), layers.Activation("relu"),
        layers.Dropout(0.25), layers.Dense(10),
    ])


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    arguments.add_argument("prepared", help="the prepared data folder (data/prepared)")
    arguments.add_argument("--epochs", type=int, default=5)
    arguments.add_argument("--threads", type=int, default=2)
    arguments.add_argument("--deterministic", action="store_true")
    args = arguments.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    if args.deterministic:
        keras.utils.set_random_seed(1)
        tf.config.experimental.enable_op_determinism()
    load = {name: np.load(f"{args.prepared}/{name}.npy") for name in
            ("train_images", "train_labels", "val_images", "val_labels")}
    steps = args.epochs * -(-len(load["train_labels"]) // 128)
    net = model()
    schedule = keras.optimizers.schedules.CosineDecay(0.0, decay_steps=steps - int(0.2 * steps), alpha=0.0,
                                                      warmup_target=0.005, warmup_steps=int(0.2 * steps))
    net.compile(optimizer=keras.optimizers.AdamW(learning_rate=schedule, weight_decay=1e-4, epsilon=1e-8),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    started = time.perf_counter()
    history = net.fit(load["train_images"], load["train_labels"], batch_size=128, epochs=args.epochs, shuffle=True,
                      validation_data=(load["val_images"], load["val_labels"]), verbose=0)
    seconds = time.perf_counter() - started
    trainable = int(sum(np.prod(weight.shape) for weight in net.trainable_weights))
    print(json.dumps({"fit_seconds": round(seconds, 3), "parameters": trainable,
                      "val_accuracy": round(float(history.history["val_accuracy"][-1]), 4)}))


if __name__ == "__main__":
    main()
