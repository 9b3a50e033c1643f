"""Train the default site's second model: a 37-breed head on the embedded MobileNet.

The most common Keras pets model, in small: the ImageNet MobileNet (alpha 0.25, 128 px,
``data/models/mobilenet_2_5_128_tf.h5``) nested as a frozen backbone inside a new model,
with its preprocessing in the graph (``Rescaling(1/127.5, offset=-1)``) and a new
``Dense(37, activation="softmax")`` head, trained on the ``trainval`` split of the
111-photo sample in ``data/oxford-pets`` (94 photos) and saved as a ``.keras`` file.

Reproducible and fast: the backbone is frozen, so its pooled features are computed once
(each photo and its mirror image) and only the head is trained, full batch, with fixed
seeds and deterministic TensorFlow ops. About 10 s on 2 CPU cores.

    python examples/finetune_pets.py            # writes data/models/mobilenet_pets.keras

atlas's default ``site_config.yaml`` shows it beside the ImageNet MobileNet
(``classes: breeds``, ``trained_on: trainval``): its conv units are the backbone's, so the
build shares their pictures, and its accuracy is measured on the 17 test photos.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"
WEIGHTS = DATA / "models" / "mobilenet_2_5_128_tf.h5"
OUTPUT = DATA / "models" / "mobilenet_pets.keras"
SIZE = 128
SEED = 0
EPOCHS = 300
LEARNING_RATE = 0.01
L2 = 1e-3


def training_photos(images: Path, annotations: Path):
    """The sample's trainval photos, decoded and resized as atlas does, with labels."""
    from atlas.data.batches import iter_batches
    from atlas.data.oxford import read_annotation_list
    from atlas.data.scan import scan_dataset

    scan = scan_dataset(images, annotations)
    labels = {name: a.class_id - 1 for name, a in read_annotation_list(annotations).items()}
    chosen = [image for image in scan.images if image.split == "trainval"]
    pixels, targets = [], []
    for batch_images, batch in iter_batches(chosen, (SIZE, SIZE)):
        pixels.append(batch)
        targets += [labels[image.name] for image in batch_images]
    return np.concatenate(pixels), np.asarray(targets, np.int32)


def build_models(keras):
    """(backbone features model, the full classifier with an untrained head)."""
    imagenet = keras.applications.MobileNet(
        alpha=0.25, input_shape=(SIZE, SIZE, 3), include_top=True, weights=str(WEIGHTS)
    )
    backbone = keras.Model(
        imagenet.input, imagenet.get_layer("conv_pw_13_relu").output, name="mobilenet_backbone"
    )
    backbone.trainable = False
    inputs = keras.Input((SIZE, SIZE, 3), name="pixels")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="preprocess")(inputs)
    x = backbone(x, training=False)
    features = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(
        37, activation="softmax", name="breeds", kernel_regularizer=keras.regularizers.L2(L2)
    )(features)
    model = keras.Model(inputs, outputs, name="mobilenet_pets")
    return keras.Model(inputs, features), model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    started = time.perf_counter()
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(SEED)
    tf.config.experimental.enable_op_determinism()
    pixels, targets = training_photos(
        DATA / "oxford-pets" / "images", DATA / "oxford-pets" / "annotations" / "list.txt"
    )
    pixels = np.concatenate([pixels, pixels[:, :, ::-1]])  # each photo and its mirror
    targets = np.concatenate([targets, targets])
    features_model, model = build_models(keras)
    features = features_model.predict(pixels.astype(np.float32), batch_size=64, verbose=0)
    head = keras.Sequential([keras.Input(features.shape[1:]), model.get_layer("breeds")])
    head.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    history = head.fit(
        features, targets, epochs=EPOCHS, batch_size=len(features), shuffle=False, verbose=0
    )
    model.compile()  # no optimizer state in the file: atlas only runs inference
    args.output.parent.mkdir(parents=True, exist_ok=True)
    model.save(args.output)
    print(
        f"{len(targets) // 2} training photos (+ mirrors), {EPOCHS} epochs: training "
        f"accuracy {history.history['accuracy'][-1]:.1%}, loss "
        f"{history.history['loss'][-1]:.3f}; wrote {args.output} "
        f"({args.output.stat().st_size:,} bytes) in {time.perf_counter() - started:.1f} s"
    )


if __name__ == "__main__":
    main()
