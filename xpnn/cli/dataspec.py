"""Which data a run trained on, as a small JSON-able record, so that ``xpnn evaluate``
can load the same rows with the same preparation (``main._load_data``: normalisation,
flattening, the sign-language split, the toy sets' seeds) and name the classes.

``xpnn train`` writes ``data_spec(args)`` into history.json (``meta["cli"]["data"]``)
and into model.safetensors's metadata (``xpnn.extra``: ``{"data": ...}``).
"""

from __future__ import annotations

from types import SimpleNamespace

#: Fashion-MNIST's class names (label order of the original files)
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")

#: the flags that shape each dataset's rows (besides --dataset, --seed where it matters)
_FIELDS = {
    "moons": ("seed", "samples", "noise"),
    "spirals": ("seed", "samples", "noise"),
    "sign-language-digits": ("seed", "classes", "image_size"),
}


def data_spec(args) -> dict:
    """The record of ``xpnn train``'s data flags (after ``_resolve_train_config`` filled
    in the defaults)."""
    spec = {"dataset": args.dataset}
    for field in _FIELDS.get(args.dataset, ()):
        value = getattr(args, field)
        spec[field] = list(value) if isinstance(value, (list, tuple)) else value
    return spec


def loader_args(spec: dict, data_dir=None, no_download=False):
    """An ``args`` for ``main._load_data`` that loads the data ``spec`` describes (the
    training defaults for what it leaves out)."""
    from .main import SIGN_LANGUAGE_IMAGE_SIZE, TOY_NOISE, TOY_SAMPLES

    name = spec["dataset"]
    return SimpleNamespace(
        dataset=name, data_dir=data_dir, no_download=no_download,
        seed=int(spec.get("seed", 0)),
        samples=spec.get("samples") or TOY_SAMPLES.get(name),
        noise=TOY_NOISE if spec.get("noise") is None else spec["noise"],
        classes=spec.get("classes"),
        image_size=spec.get("image_size") or SIGN_LANGUAGE_IMAGE_SIZE,
    )


def complete(spec: dict) -> dict:
    """``spec`` with every field its dataset's loader uses, the left-out ones given the
    training defaults (what ``loader_args`` loads)."""
    args = loader_args(spec)
    return data_spec(args)


def class_names(spec: dict | None, n_classes: int) -> list[str]:
    """Names of the labels 0..n_classes-1: Fashion-MNIST's words, the digits a
    sign-language run kept (``--classes 3 7``: '3', '7'), else the labels themselves."""
    name = (spec or {}).get("dataset")
    if name == "fashion-mnist" and n_classes == len(FASHION_MNIST_CLASSES):
        return list(FASHION_MNIST_CLASSES)
    classes = (spec or {}).get("classes")
    if name == "sign-language-digits" and classes and len(classes) == n_classes:
        return [str(c) for c in classes]
    return [str(k) for k in range(n_classes)]
