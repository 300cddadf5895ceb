"""Models as data: what featviz needs to know of a model to load it and show it.

A :class:`ModelSpec` describes one model: the names :func:`featviz.models.load` takes for it,
the function that builds the network, the image size and normalization it was trained with,
its layer aliases, its class names and where its weights come from (:class:`WeightsSource`).
A :class:`Family` describes many at once: a source whose members are known only when its
library is imported (torchvision's classifiers) or that takes any name after a prefix
(``timm:NAME``, ``hf:ID``). Both are registered in :mod:`featviz.models.registry`, which
``load`` reads; this module only declares their shape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from torch import nn

from .imagenet import IMAGENET_MEAN, IMAGENET_STD

#: what a ``weights=`` name (``"default"``, ``"IMAGENET1K_V1"``) asks of a model:
#: "builder": the builder resolves it (a torchvision enum, a download); featviz reads files.
#: "env": ``"default"`` is the file ``WeightsSource.file`` in the folder ``$WeightsSource.env``
#: names (with ``WeightsSource.fetch``, featviz's cache: that folder, else the user cache
#: folder, where ``fetch`` makes the file when it is absent); other names are an error.
#: "files": no weights by name, a local file or random only.
#: "source": the builder takes every ``weights=`` as given, files included (timm and
#: transformers read them with the model).
WEIGHT_KINDS = ("builder", "env", "files", "source")


@dataclass(frozen=True)
class WeightsSource:
    """Where a model's weights come from: shown in the catalog, resolved by ``load``.

    Attributes:
        description: one line for the catalog (``"IMAGENET1K_V2, downloaded into the torch hub
            cache"``).
        kind: one of :data:`WEIGHT_KINDS`.
        env: for kind "env", the variable that names the folder of the file.
        file: for kind "env", the file's name in that folder.
        what: for kind "env", what the file holds, for the error that says where to get it.
        input_size: the image side the default weights take where it is not the spec's (a
            torchvision enum's crop size), for the catalog.
        fetch: for kind "env", makes the file when it is absent (a download): called with the
            file's path in featviz's cache (the folder ``$env`` names, else the user cache
            folder); raises :class:`~featviz.errors.WeightsError` when it cannot. None: the
            file must be there.
    """

    description: str = "the builder's own"
    kind: str = "builder"
    env: str = ""
    file: str = ""
    what: str = "weights"
    input_size: int | None = None
    fetch: Callable[[Path], Any] | None = None

    def __post_init__(self) -> None:
        if self.kind not in WEIGHT_KINDS:
            raise ValueError(f"WeightsSource kind must be one of {WEIGHT_KINDS}, got "
                             f"{self.kind!r}")
        if self.kind == "env" and not (self.env and self.file):
            raise ValueError("a WeightsSource of kind 'env' needs env= and file=")


@dataclass(frozen=True)
class Request:
    """What a builder is asked for.

    Attributes:
        name: the name as the caller typed it (``"inception_v1"``, ``"timm:resnet18"``), for
            messages.
        member: the spec's own name (``"googlenet"``, ``"resnet18"``).
        weights: None for random initialization, a local file (a path, or a string that names
            one), or weights by name as the spec's :class:`WeightsSource` lets through; for kind
            "source", the caller's value as given.
        mean: the caller's normalization mean, or None for the model's own.
        std: the caller's normalization std, or None for the model's own.
        options: keyword arguments for the builder (only for specs with ``takes_options``).
    """

    name: str
    member: str
    weights: Any
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Built:
    """What a builder made: the network, and what its weights say beyond the spec's data
    (a torchvision enum carries its own statistics and crop size). A builder may return the
    bare network instead, or a :class:`~featviz.models.preprocess.Preprocessed` that it
    wrapped itself (timm and transformers read their preprocessing from the library).

    Attributes:
        net: the network, unwrapped.
        mean: the weights' normalization mean, over the spec's.
        std: the weights' normalization std, over the spec's.
        input_size: the weights' image side, over the spec's.
    """

    net: nn.Module
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    input_size: int | None = None


#: a builder: the request in, the network out (see :class:`Built`)
Builder = Callable[[Request], Any]
#: class names, or a function that finds them on the built network (None: it has none)
Classes = Sequence[str] | Callable[[nn.Module], Sequence[str] | None] | None


@dataclass(frozen=True)
class ModelSpec:
    """One model as data: how to build it and what it takes.

    Attributes:
        name: the name :func:`featviz.models.load` takes.
        build: makes the network from a :class:`Request`.
        family: the source it belongs to (``"torchvision"``, ``"cifar"``, your project's).
        description: one line for the catalog.
        aliases: other names ``load`` takes for it.
        input_size: the image side it was trained on.
        mean: its normalization mean, one value per input channel (or one for all).
        std: its normalization std, as ``mean``.
        layer_aliases: other names of its layers, ``{alias: module path}``.
        classes: its class names, or a function of the built network that gives them.
        weights: where its weights come from.
        fixed_size: whether it takes ``input_size`` only (position embeddings, window grids).
        layouts: the layouts of layers that are not ``[B, C, H, W]``
            (see :mod:`featviz.core.layouts`).
        takes_options: whether ``load``'s extra keyword arguments go to its builder.
        render: the render options it declares for itself, by name (the caller's override
            them), e.g. :data:`featviz.models.courses.TRANSFORMER` for a vision transformer.
    """

    name: str
    build: Builder
    family: str = "user"
    description: str = ""
    aliases: tuple[str, ...] = ()
    input_size: int = 224
    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD
    layer_aliases: Mapping[str, str] = field(default_factory=dict)
    classes: Classes = None
    weights: WeightsSource = field(default_factory=WeightsSource)
    fixed_size: bool = False
    layouts: Mapping[str, str] = field(default_factory=dict)
    takes_options: bool = False
    render: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a ModelSpec needs a name, got {self.name!r}")
        if not callable(self.build):
            raise ValueError(f"ModelSpec {self.name!r}: build must be callable, got "
                             f"{type(self.build).__name__}")
        # a tuple whatever was given; a lone string is one name, not one per letter
        aliases = (self.aliases,) if isinstance(self.aliases, str) else tuple(self.aliases)
        object.__setattr__(self, "aliases", aliases)

    def class_names(self, net: nn.Module) -> list[str] | None:
        """The class names of the built network.

        Args:
            net: the network :attr:`build` made, unwrapped.
        """
        names = self.classes(net) if callable(self.classes) else self.classes
        return list(names) if names is not None else None


@dataclass(frozen=True)
class Family:
    """Many models of one source, listed or built only when asked for.

    Attributes:
        name: the family's name (``"torchvision"``, ``"timm"``).
        spec: the :class:`ModelSpec` of one member, by its own name (after the prefix).
        members: lists the names ``load`` takes (imports the library then); None for a family
            that takes any name after its prefix.
        prefix: names ``"PREFIX:REST"`` belong to the family, ``REST`` being the member.
        aliases: other names of members, ``{alias: member}``.
        usage: how a name of an open family is spelled (``"timm:NAME"``), for the catalog.
        description: one line for the catalog row of an open family.
        weights: where an open family's weights come from, for its catalog row.
        takes_options: whether its builders take ``load``'s extra keyword arguments (the
            members' specs say so too; this is what messages name).
    """

    name: str
    spec: Callable[[str], ModelSpec]
    members: Callable[[], Iterable[str]] | None = None
    prefix: str = ""
    aliases: Mapping[str, str] = field(default_factory=dict)
    usage: str = ""
    description: str = ""
    weights: str = ""
    takes_options: bool = False

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a Family needs a name")
        if (self.members is None) == (not self.prefix):
            raise ValueError(f"Family {self.name!r} needs exactly one of members= (a listed "
                             "family) and prefix= (an open one)")


class CatalogRow(NamedTuple):
    """One line of :func:`featviz.models.catalog`.

    Attributes:
        name: a name :func:`featviz.models.load` takes (``"timm:NAME"`` for an open family).
        family: the family it belongs to.
        input_size: the image side it takes with its default weights; None where the model
            says (timm, Hugging Face).
        weights: where its default weights come from.
        description: what it is, in one line.
    """

    name: str
    family: str
    input_size: int | None
    weights: str
    description: str
