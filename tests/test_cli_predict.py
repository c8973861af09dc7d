"""``xpnn predict``: labels and probabilities for .npy, .csv and image inputs, equal to
``MLP.predict_labels`` / ``MLP.predict`` on the rows the datasets would give, as CSV or
JSON; one-line errors for bad inputs."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from helpers import assert_one_line_error, run_cli

import xpnn


def read_csv(text):
    return list(csv.DictReader(io.StringIO(text)))


def rows_x(n=7, d=16, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, d)).astype(np.float32)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A 16-8-3 softmax model (4x4 'images'), trained a little so classes differ."""
    folder = tmp_path_factory.mktemp("model")
    x = rows_x(90, seed=1)
    t = np.argmax(x[:, :3], axis=1)
    net = xpnn.MLP([16, 8, 3], activation="tanh", weight_init="xavier", seed=0)
    xpnn.train(net, (x, t), batch_size=None, iters=200, optimizer=xpnn.optim.SGD(lr=2.0),
               progress=False)
    net.save(folder / "model.safetensors")
    return folder, net


def expected(net, x):
    return (xpnn.to_numpy(net.predict_labels(x)),
            xpnn.to_numpy(net.predict(x)))


def test_npy_rows_csv_to_stdout_match_the_model(capsys, model, tmp_path):
    folder, net = model
    x = rows_x()
    np.save(tmp_path / "x.npy", x)
    code, out, err = run_cli(capsys, "predict", folder, tmp_path / "x.npy")
    assert code == 0, err
    rows = read_csv(out)
    labels, probs = expected(net, x)
    assert len(set(labels.tolist())) > 1  # a test that can tell labels apart
    assert [r["input"] for r in rows] == [str(tmp_path / "x.npy")] * 7
    assert [int(r["row"]) for r in rows] == list(range(7))
    np.testing.assert_array_equal([int(r["label"]) for r in rows], labels)
    got = np.array([[np.float32(r[f"p_{k}"]) for k in range(3)] for r in rows])
    np.testing.assert_array_equal(got, probs)  # printed in float32's round-trip form
    assert "class" not in rows[0]  # labels are their own names here


def test_json_out_and_several_inputs_of_each_kind(capsys, model, tmp_path):
    folder, net = model
    x = rows_x(5)
    np.save(tmp_path / "a.npy", x[:2].reshape(2, 4, 4))  # (N, h, w) images
    np.save(tmp_path / "one.npy", x[2])  # one row
    np.savetxt(tmp_path / "b.csv", x[3:], delimiter=",", fmt="%.9g",
               header=",".join(f"px{i}" for i in range(16)), comments="")
    np.savetxt(tmp_path / "c.txt", x[3:], fmt="%.9g")  # spaces, no header
    code, _, err = run_cli(capsys, "predict", folder / "model.safetensors", tmp_path / "a.npy",
                           tmp_path / "one.npy", tmp_path / "b.csv", tmp_path / "c.txt",
                           "--out", tmp_path / "p.json")
    assert code == 0, err
    data = json.loads((tmp_path / "p.json").read_text())
    preds = data["predictions"]
    assert [(p["input"].rsplit("/", 1)[1], p["row"]) for p in preds] == [
        ("a.npy", 0), ("a.npy", 1), ("one.npy", 0), ("b.csv", 0), ("b.csv", 1),
        ("c.txt", 0), ("c.txt", 1)]
    all_x = np.concatenate([x, x[3:]])
    labels, probs = expected(net, all_x)
    np.testing.assert_array_equal([p["label"] for p in preds], labels)
    np.testing.assert_array_equal(np.array([p["probabilities"] for p in preds],
                                           dtype=np.float32), probs)
    assert data["classes"] == ["0", "1", "2"]


def test_uint8_arrays_are_pixels_scaled_like_the_datasets(capsys, model, tmp_path):
    folder, net = model
    pixels = np.random.default_rng(2).integers(0, 256, (4, 4, 4), dtype=np.uint8)
    np.save(tmp_path / "u8.npy", pixels)
    code, out, err = run_cli(capsys, "predict", folder, tmp_path / "u8.npy")
    assert code == 0, err
    x = pixels.reshape(4, 16).astype(np.float32)
    x /= 255.0  # what load_mnist does
    np.testing.assert_array_equal([int(r["label"]) for r in read_csv(out)],
                                  expected(net, x)[0])


def test_images_are_prepared_as_the_sign_language_digits(capsys, model, tmp_path):
    """An image file gives the row load_sign_language_digits makes of it (grayscale,
    resized to the model's 4x4, /255), so the same prediction."""
    Image = pytest.importorskip("PIL.Image")
    folder, net = model
    rng = np.random.default_rng(4)
    files = []
    for label in (0, 1):
        (tmp_path / "Dataset" / str(label)).mkdir(parents=True)
        for i in range(5):
            rgb = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)  # not square, colour
            file = tmp_path / "Dataset" / str(label) / f"{i}.png"
            Image.fromarray(rgb).save(file)
            files.append(file)
    (xa, _), (xb, _) = xpnn.data.load_sign_language_digits(path=tmp_path, size=4,
                                                           test_size=0.2, stratify=False)
    rows = np.concatenate([xpnn.to_numpy(xa), xpnn.to_numpy(xb)])
    code, out, err = run_cli(capsys, "predict", folder, *files, "--format", "json")
    assert code == 0, err
    preds = json.loads(out)["predictions"]
    got = np.array([p["probabilities"] for p in preds], dtype=np.float32)
    for row in rows:  # the loader shuffles: each of its rows is one of the files'
        want = xpnn.to_numpy(net.predict(row[None, :]))[0]
        assert any(np.array_equal(want, g) for g in got)
    jpg = tmp_path / "photo.jpg"
    Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).save(jpg)
    code, out, err = run_cli(capsys, "predict", folder, jpg)
    assert code == 0 and len(read_csv(out)) == 1, err


def test_binary_model_gives_both_class_probabilities(capsys, tmp_path):
    net = xpnn.MLP([3, 1], loss="binary_cross_entropy", weight_init=1.0, seed=0)
    net.save(tmp_path / "model.safetensors")
    x = np.random.default_rng(0).standard_normal((20, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code, out, err = run_cli(capsys, "predict", tmp_path, tmp_path / "x.npy")
    assert code == 0, err
    rows = read_csv(out)
    p = xpnn.to_numpy(net.predict(x))[:, 0]
    np.testing.assert_array_equal([np.float32(r["p_1"]) for r in rows], p)
    np.testing.assert_array_equal([np.float32(r["p_0"]) for r in rows], 1 - p)
    np.testing.assert_array_equal([int(r["label"]) for r in rows], (p > 0.5).astype(int))
    assert 0 < sum(int(r["label"]) for r in rows) < 20


def test_class_names_come_from_the_training_record(capsys, tmp_path):
    """A model whose record says fashion-mnist: the CSV and JSON name the classes."""
    net = xpnn.MLP([4, 10], seed=0)
    xpnn.save(net, tmp_path / "model.safetensors", extra_meta={"data": {"dataset":
                                                                        "fashion-mnist"}})
    np.save(tmp_path / "x.npy", rows_x(3, d=4))
    code, out, err = run_cli(capsys, "predict", tmp_path, tmp_path / "x.npy")
    assert code == 0, err
    rows = read_csv(out)
    assert "p_Ankle boot" in rows[0] and "p_T-shirt/top" in rows[0]
    names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
             "Sneaker", "Bag", "Ankle boot"]
    assert all(r["class"] == names[int(r["label"])] for r in rows)


@pytest.mark.parametrize("backend_name", ["torch", "jax", "array_api_strict"])
def test_backend_and_device_flags(capsys, model, tmp_path, backend_name):
    if backend_name not in xpnn.backend.available_backends():
        pytest.skip(f"{backend_name} not installed")
    folder, net = model
    x = rows_x()
    np.save(tmp_path / "x.npy", x)
    code, out, err = run_cli(capsys, "predict", folder, tmp_path / "x.npy", "--backend",
                             backend_name, "--device", "cpu" if backend_name != "array_api_strict"
                             else "device1", "--dtype", "float64")
    assert code == 0, err
    rows = read_csv(out)
    ref = xpnn.load(folder / "model.safetensors", dtype="float64")
    labels, probs = expected(ref, x.astype(np.float64))
    np.testing.assert_array_equal([int(r["label"]) for r in rows], labels)
    np.testing.assert_allclose([[float(r[f"p_{k}"]) for k in range(3)] for r in rows], probs,
                               rtol=1e-12, atol=1e-15)


# -- errors -----------------------------------------------------------------------------------


def _write(path, data):
    if isinstance(data, np.ndarray):
        np.save(path, data)
    elif isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data)
    return path


@pytest.mark.parametrize("name, data, fragments", [
    ("wide.npy", np.zeros((3, 100)), ["the model expects 16 features", "has 100"]),
    ("img.npy", np.zeros((2, 5, 5)), ["expects 16 features", "has 25", "shape (2, 5, 5)"]),
    ("empty.npy", b"", ["is empty"]),
    ("norows.npy", np.zeros((0, 16)), ["holds no rows"]),
    ("nan.npy", np.where(np.eye(3, 16) > 0, np.nan, 0.0), ["row 0, column 0 is nan"]),
    ("inf.npy", np.full((2, 16), np.inf), ["row 0, column 0 is inf"]),
    ("obj.npy", np.array([{"a": 1}], dtype=object), ["not a readable .npy"]),
    ("text.npy", b"this is not numpy", ["not a readable .npy"]),
    ("strings.npy", np.array([["a"] * 16]), ["give numbers"]),
    ("nan.csv", "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,nan\n", ["row 0, column 15 is nan"]),
    ("narrow.csv", "a,b\n1,2\n3,4\n", ["expects 16 features", "has 2 values per row"]),
    ("ragged.csv", ",".join(["1"] * 16) + "\n1,2\n", ["not a table of numbers"]),
    ("header.csv", "a,b,c\n", ["a header and no rows"]),
    ("blank.csv", "\n\n# a comment\n", ["holds no rows"]),
    ("words.csv", ",".join(["1"] * 16) + "\n" + ",".join(["x"] * 16) + "\n",
     ["not a table of numbers"]),
    ("broken.png", b"\x89PNG\r\n\x1a\nnot really", ["cannot decode image", "broken.png"]),
    ("data.bin", b"\x00\x01", ["unknown kind of file"]),
])
def test_bad_inputs_are_one_line_errors(capsys, model, tmp_path, name, data, fragments):
    folder, _ = model
    if name.endswith(".png"):
        pytest.importorskip("PIL")
    path = _write(tmp_path / name, data)
    code, out, err = run_cli(capsys, "predict", folder, path)
    assert_one_line_error(code, err, *fragments)
    assert out == ""


def test_truncated_npy_is_refused_before_reading(capsys, model, tmp_path):
    """A header that claims far more rows than the file holds: an error, no allocation."""
    folder, _ = model
    np.save(tmp_path / "big.npy", np.zeros((4, 16)))
    data = (tmp_path / "big.npy").read_bytes().replace(b"(4, 16)", b"(4000000000, 16)", 1)
    _write(tmp_path / "big.npy", data[:-8])
    code, _, err = run_cli(capsys, "predict", folder, tmp_path / "big.npy")
    assert_one_line_error(code, err, "not a readable .npy")


def test_model_and_output_errors(capsys, model, tmp_path):
    folder, _ = model
    np.save(tmp_path / "x.npy", rows_x())
    x = tmp_path / "x.npy"
    code, _, err = run_cli(capsys, "predict", folder, tmp_path / "nope.npy")
    assert_one_line_error(code, err, "no such file")
    code, _, err = run_cli(capsys, "predict", folder, x, "--out", tmp_path / "p.txt")
    assert_one_line_error(code, err, "give a .csv or .json file")
    code, _, err = run_cli(capsys, "predict", folder, x, "--out", tmp_path / "p.csv",
                           "--format", "json")
    assert_one_line_error(code, err, "does not match")
    code, _, err = run_cli(capsys, "predict", tmp_path, x)
    assert_one_line_error(code, err, "without model.safetensors")
    wide = xpnn.MLP([3, 2], seed=0)
    wide.save(tmp_path / "m3.safetensors")
    (tmp_path / "i.png").write_bytes(b"")
    code, _, err = run_cli(capsys, "predict", tmp_path / "m3.safetensors", tmp_path / "i.png")
    assert_one_line_error(code, err, "is empty")
    pytest.importorskip("PIL")
    from PIL import Image

    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(tmp_path / "i.png")
    code, _, err = run_cli(capsys, "predict", tmp_path / "m3.safetensors", tmp_path / "i.png")
    assert_one_line_error(code, err, "expects 3 features, not a square image")
