"""The four CAM methods against tf-keras-vis, an independent implementation.

atlas computes Grad-CAM, Grad-CAM++ and LayerCAM for every layer from one backward pass
and Score-CAM from batched masked passes; tf-keras-vis (0.8, which runs on Keras 3)
computes each map on its own, one layer and one image at a time. Both maps are compared
after scaling each to its peak (atlas stores maps scaled to their peak): they must agree
within 1e-4 of the peak for the gradient methods (float32 round-off) and 2e-3 for
Score-CAM (its masks are resized by TensorFlow here and by scipy there).
"""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")
vis = pytest.importorskip("tf_keras_vis")

from conftest import tiny_conv_model  # noqa: E402
from tf_keras_vis.gradcam import Gradcam  # noqa: E402
from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus  # noqa: E402
from tf_keras_vis.layercam import Layercam  # noqa: E402
from tf_keras_vis.scorecam import Scorecam  # noqa: E402
from tf_keras_vis.utils.model_modifiers import ReplaceToLinear  # noqa: E402
from tf_keras_vis.utils.scores import CategoricalScore  # noqa: E402

from atlas.render.cams import METHODS, top_variance_channels  # noqa: E402
from atlas.render.graph import flatten_model  # noqa: E402
from atlas.render.maps import MapRenderer  # noqa: E402

SIZE = 32
LAYERS = ["conv", "depthwise", "separable"]
K = 3  # Score-CAM channels (the layers have 4, 4 and 6)
TOLERANCE = {"gradcam": 1e-4, "gradcampp": 1e-4, "layercam": 1e-4, "scorecam": 2e-3}


def _scaled(cam: np.ndarray) -> np.ndarray:
    cam = np.asarray(cam, np.float64)
    return cam / cam.max() if cam.max() > 0 else cam


@pytest.fixture(scope="module")
def setup():
    model = tiny_conv_model(SIZE, classes=10, seed=3)
    graph = flatten_model(model)  # atlas's graph gives logits; the model is unchanged
    renderer = MapRenderer(
        graph.submodel(LAYERS, with_logits=True),
        lambda x: x / 255.0,
        4,
        score_channels=K,
        probabilities=graph.probabilities,
    )
    images = np.random.default_rng(1).integers(0, 256, (3, SIZE, SIZE, 3)).astype(np.uint8)
    results = renderer.run(images, [7, -1, 2])
    return model, images, results


def _reference(method: str, model, image: np.ndarray, layer: str, cls: int) -> np.ndarray:
    seed = image[None].astype(np.float32) / 255.0
    score = CategoricalScore([cls])
    common = {
        "penultimate_layer": layer,
        "seek_penultimate_conv_layer": False,  # it takes DepthwiseConv2D for no conv layer
        "expand_cam": False,
        "normalize_cam": False,
    }
    if method == "scorecam":
        return Scorecam(model, clone=False)(score, seed, max_N=K, **common)[0]
    cls_ = {"gradcam": Gradcam, "gradcampp": GradcamPlusPlus, "layercam": Layercam}[method]
    # The gradient methods follow the class logit: tf-keras-vis takes the softmax off a
    # clone of the model (ReplaceToLinear), as atlas does in its own graph; the model
    # itself keeps its softmax (Score-CAM weighs by probabilities, above).
    explainer = cls_(model, model_modifier=ReplaceToLinear(), clone=True)
    return np.asarray(explainer(score, seed, **common))[0]


@pytest.mark.parametrize("method", METHODS)
def test_each_method_matches_tf_keras_vis(setup, method):
    model, images, results = setup
    compared = 0
    for index, maps in enumerate(results):
        for slot, cls in enumerate(maps.cam_classes):
            for layer_index, layer in enumerate(LAYERS):
                ours = _scaled(maps.method_cams[method][slot][layer_index])
                theirs = _scaled(_reference(method, model, images[index], layer, cls))
                assert ours.shape == theirs.shape
                np.testing.assert_allclose(
                    ours, theirs, atol=TOLERANCE[method], err_msg=f"{method} {layer} {cls}"
                )
                compared += int(theirs.max() > 0)
    assert compared >= 6  # not a comparison of empty maps


def test_second_slot_is_the_asked_class_and_gradcam_is_unchanged(setup):
    _, _, results = setup
    assert [maps.cam_classes[1] for maps in results][::2] == [7, 2]
    assert results[1].cam_classes[1] == results[1].cam_classes[0]  # -1: the top-1 again
    for maps in results:
        for slot in (0, 1):
            for ours, kept in zip(maps.method_cams["gradcam"][slot], maps.cams[slot], strict=True):
                np.testing.assert_array_equal(ours, kept)


def test_faster_score_cam_keeps_the_most_varied_channels():
    feature = np.zeros((1, 4, 4, 5), np.float32)
    feature[0, 0, 0, 3] = 9.0  # the most varied
    feature[0, :2, :2, 1] = 1.0  # next
    feature[0, :, :, 4] = 5.0  # constant: no spread at all
    assert top_variance_channels(feature, 2).tolist() == [[3, 1]]
    assert top_variance_channels(feature, 9).shape == (1, 5)
