"""ImageNet transfer classifiers of the NITK report (Sec. 6.2): VGG16 and ResNet50.

Three classifiers of spectrogram images, named after the report's Figure 19 columns:

=============  =============================================  ==========================
name           frozen (ImageNet weights kept)                 trained
=============  =============================================  ==========================
resnet50_fc    all of ResNet50's convolutions (avg-pooled)    the new head
vgg16_fc       all 13 of VGG16's convolutions                 the new head
vgg16_half     VGG16 up to conv4_1 (``features[0:19]``)       conv4_2 .. conv5_3 + head
=============  =============================================  ==========================

The head is the report's listing: ``25088 -> 4096 -> ReLU -> dropout 0.5 -> 4096 -> ReLU
-> dropout 0.5 -> N`` (25088 = 7 x 7 x 512, VGG16's last pooled map at 224 x 224). The
half-frozen network adds ``Dropout2d(0.4)`` after conv4_2, pool4 and conv5_1 (the
listing's ``FeaturesD``). The listing freezes ``features[0:19]``, i.e. the first eight
convolutions (conv1_1 .. conv4_1); the prose says "the first ten", we follow the code.
ResNet50's head is not listed: the same two hidden layers on its 2048 average-pooled
features (our choice; ``torchvision``'s ResNet50 also ends in average pooling).

Every network takes the three-channel [0, 255] spectrogram image of `keras_ser.features`
(preset ``nitk``) and applies its own application's ``preprocess_input``
(`ImageNetPreprocess`; both are Caffe-style: RGB -> BGR, ImageNet mean subtracted).

Frozen layers run in inference mode (Keras semantics of ``trainable = False``, so the
batch norms of ResNet50 keep their ImageNet statistics), which makes the frozen part a
fixed function of the image: `TransferNetwork.frozen` is computed once per image and
cached (`keras_ser.protocols.transfer.FeatureCache`), and only `TransferNetwork.head`
is trained. Training the whole `TransferNetwork.logits` model gives the same steps
(``tests/test_transfer.py``).

Loss and optimiser (Sec. 6.2): "standard Binary Cross Entropy Loss" on the one-hot
targets (a sigmoid per class) and "Stochastic Gradient Descent"; the learning rate 1e-3
and momentum 0.9 are our choice. ``loss="cce"`` gives the usual softmax cross-entropy.
Both heads output logits; the scoring and served classifier apply a softmax over them,
which keeps the argmax of the sigmoids (probabilities that sum to 1, our choice).

Weights: ``weights="imagenet"`` loads Keras' ``*_notop.h5`` file from the Keras cache
(``$KERAS_HOME/models``, default ``~/.keras/models``) and never downloads;
``weights=PATH`` loads that file; ``None`` initialises at random (seeded). Presets are
data (`TRANSFER_PRESETS`): ``paper`` (224 x 224 input, 4096-unit head) and ``cpu`` (the
224 x 224 image resized to 64 x 64 inside the frozen part, a 512-unit head and SGD at
1e-2: the same layers, about 12x fewer operations).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

import keras
import numpy as np
from keras import layers

#: Keras' ImageNet weight files without the classifier top, and where they come from.
WEIGHT_FILES = {
    "vgg16": ("vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
              "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"),
    "resnet50": ("resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
                 "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"),
}
LOSSES = ("bce", "cce")


@dataclasses.dataclass(frozen=True)
class ClassifierSpec:
    """Which network and which of its layers are frozen.

    Attributes:
        network: ``"vgg16"`` or ``"resnet50"``.
        trainable_from: First base layer trained (``None``: the whole base is frozen).
        dropout_after: Base layers followed by ``Dropout2d`` (SpatialDropout2D).
        title: Name in result tables (the report's Figure 19).
    """

    network: str
    trainable_from: str | None
    dropout_after: tuple
    title: str


CLASSIFIERS = {
    "resnet50_fc": ClassifierSpec("resnet50", None, (), "ResNet50_only_fl"),
    "vgg16_fc": ClassifierSpec("vgg16", None, (), "VGG_16_only_fl"),
    "vgg16_half": ClassifierSpec("vgg16", "block4_conv2",
                                 ("block4_conv2", "block4_pool", "block5_conv1"),
                                 "VGG_16_half_freeze"),
}


@dataclasses.dataclass(frozen=True)
class TransferConfig:
    """Sizes and training values of the transfer classifiers.

    Attributes:
        input_size: Side in pixels of the image the network sees (report 224; a smaller
            value resizes the 224 x 224 image bilinearly inside the frozen part).
        head_units: Width of the two hidden layers of the head (report 4096).
        head_dropout: Dropout after each hidden layer (report 0.5).
        conv_dropout: Channel dropout of ``vgg16_half`` (report 0.4).
        loss: ``"bce"`` (report Sec. 6.2) or ``"cce"``.
        learning_rate, momentum: SGD (report: SGD; the values are our choice).
        batch_size: Images per step (not in the report; 32, our choice).
        standardise: Put a `keras.layers.Normalization` (per feature or channel, adapted
            on the fold's training features) before the trainable part. Our choice for
            randomly initialised bases, whose frozen features share one large common
            component that SGD does not get past in a CPU budget (on an EmoDB fold the
            head stayed at the majority class for 60 epochs without it, and reached 94 %
            training accuracy in 10 with it); off for the report's ImageNet bases.
    """

    input_size: int = 224
    head_units: int = 4096
    head_dropout: float = 0.5
    conv_dropout: float = 0.4
    loss: str = "bce"
    learning_rate: float = 1e-3
    momentum: float = 0.9
    batch_size: int = 32
    standardise: bool = False

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.input_size < 32:
            raise ValueError(f"VGG16 and ResNet50 need at least 32 x 32 pixels, got "
                             f"{self.input_size}")

    def replace(self, **changes) -> TransferConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """JSON-ready fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, doc: dict) -> TransferConfig:
        """Inverse of `to_dict`."""
        return cls(**doc)


TRANSFER_PRESETS = {"paper": TransferConfig(),
                    "cpu": TransferConfig(input_size=64, head_units=512, learning_rate=1e-2)}


def get_config(name) -> TransferConfig:
    """The `TransferConfig` of a preset name (a config passes through).

    Raises:
        KeyError: Unknown preset; the message lists the known ones.
    """
    if isinstance(name, TransferConfig):
        return name
    if name not in TRANSFER_PRESETS:
        raise KeyError(f"unknown transfer preset '{name}'; known: {', '.join(TRANSFER_PRESETS)}")
    return TRANSFER_PRESETS[name]


@keras.saving.register_keras_serializable(package="keras_ser")
class ImageNetPreprocess(layers.Layer):
    """The application's own ``preprocess_input`` as a layer (so exports include it).

    Args:
        network: ``"vgg16"`` or ``"resnet50"``.

    Input/output shape:
        ``(batch, H, W, 3)`` float32 RGB in [0, 255] -> the same shape, BGR with the
        ImageNet channel means subtracted (both applications use Caffe-style input).

    Raises:
        ValueError: Unknown network.
    """

    def __init__(self, network: str, **kwargs):
        super().__init__(**kwargs)
        if network not in WEIGHT_FILES:
            raise ValueError(f"unknown network '{network}'; known: {', '.join(WEIGHT_FILES)}")
        self.network = network

    def call(self, images):
        """``preprocess_input`` of the network's Keras application.

        Args:
            images: ``(batch, H, W, 3)`` float32 RGB in [0, 255].

        Returns:
            The same shape, float32: channels reversed to BGR and the ImageNet means
            (103.939, 116.779, 123.68 for B, G, R) subtracted, no scaling.
        """
        module = (keras.applications.vgg16 if self.network == "vgg16"
                  else keras.applications.resnet50)
        return module.preprocess_input(images)

    def get_config(self):
        return {**super().get_config(), "network": self.network}


def keras_cache_dir() -> str:
    """Folder where Keras keeps downloaded application weights (``$KERAS_HOME/models``)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "models")


def resolve_weights(network: str, weights: str | None) -> str | None:
    """The weight file to load for ``weights``, without downloading anything.

    Args:
        network: ``"vgg16"`` or ``"resnet50"``.
        weights: ``"imagenet"`` (Keras' ``*_notop.h5`` in `keras_cache_dir`), a path to
            an ``.h5`` / ``.weights.h5`` file of the base without top, or ``None``.

    Returns:
        The file path, or ``None`` for random initialisation.

    Raises:
        FileNotFoundError: The file is missing; the message names the file, the folder to
            put it in, and where to fetch it on a machine with internet access.
    """
    if weights is None:
        return None
    name, url = WEIGHT_FILES[network]
    if weights == "imagenet":
        path = os.path.join(keras_cache_dir(), name)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"ImageNet weights of {network} not found: {path} is missing. This machine "
                f"does not download; fetch {url}{name} elsewhere and place it in "
                f"{keras_cache_dir()} (or pass --weights /path/to/{name})")
        return path
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"--weights {weights}: no such file (expected {network}'s "
                                f"weights without top, e.g. {name})")
    return weights


def _base(network: str, size: int, weights_path: str | None) -> keras.Model:
    shape = (size, size, 3)
    if network == "vgg16":
        base = keras.applications.VGG16(include_top=False, weights=None, input_shape=shape)
    else:
        base = keras.applications.ResNet50(include_top=False, weights=None, input_shape=shape,
                                           pooling="avg")
    if weights_path is not None:
        try:
            base.load_weights(weights_path)
        except (ValueError, OSError, KeyError) as err:
            raise ValueError(f"{weights_path}: not {network} weights without top ({err})") from err
    return base


@dataclasses.dataclass
class TransferNetwork:
    """A transfer classifier in its two parts.

    Attributes:
        name: Key of `CLASSIFIERS`.
        frozen: ``(batch, S, S, 3)`` images in [0, 255] -> ``(batch, D)`` or
            ``(batch, h, w, c)`` fixed features (non-trainable; inference mode).
        head: Frozen features -> ``(batch, N)`` logits (all trainable).
        logits: ``frozen`` then ``head``: images -> logits (what is trained end to end
            without the cache).
        classifier: Images -> ``(batch, N)`` softmax probabilities (scoring, export;
            always in inference mode).
        config: The `TransferConfig`.
    """

    name: str
    frozen: keras.Model
    head: keras.Model
    logits: keras.Model
    classifier: keras.Model
    config: TransferConfig

    def compile(self, model: keras.Model | None = None) -> keras.Model:
        """Compile ``model`` (default `head`) with the report's loss and SGD; the
        optimiser is built so a checkpoint can be restored before the first step.

        Args:
            model: `head` (trained on cached frozen features) or `logits` (trained on
                ``(batch, S, S, 3)`` images); either outputs ``(batch, N)`` logits.

        Returns:
            ``model``, compiled with BCE on the one-hot targets (``config.loss ==
            "bce"``, report Sec. 6.2) or softmax cross-entropy (``"cce"``), both from
            logits; SGD at ``config.learning_rate`` with ``config.momentum`` (our
            values); the metric ``accuracy`` (categorical, argmax).
        """
        model = model or self.head
        if self.config.loss == "bce":
            loss = keras.losses.BinaryCrossentropy(from_logits=True)
        else:
            loss = keras.losses.CategoricalCrossentropy(from_logits=True)
        model.compile(optimizer=keras.optimizers.SGD(self.config.learning_rate,
                                                     momentum=self.config.momentum),
                      loss=loss, metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
        model.optimizer.build(model.trainable_variables)
        return model

    def standardise(self, features: np.ndarray) -> None:
        """Set the ``standardise`` layer (if any) to the mean and variance of training
        ``features`` (the frozen part's outputs on the training images), per last axis.

        A variance is floored at 1 % of the mean variance (our choice): a unit that never
        fired in training (ReLU features are often all zero) must not be divided by
        ~0 when it fires on a test image. Does nothing when ``config.standardise`` is
        False (no such layer).

        Args:
            features: ``(n, D)`` or ``(n, h, w, c)`` frozen features (`frozen`'s output
                shape); statistics per last axis over all other axes. Copied to float64
                while computing (``n x`` the feature size x 8 bytes).

        Raises:
            ValueError: ``features`` whose last axis does not fit the layer.
        """
        if not any(layer.name == "standardise" for layer in self.head.layers):
            return
        flat = np.asarray(features, np.float64).reshape(-1, features.shape[-1])
        mean, variance = flat.mean(axis=0), flat.var(axis=0)
        variance = np.maximum(variance, 0.01 * variance.mean() + 1e-12)
        layer = self.head.get_layer("standardise")
        layer.set_weights([mean.astype(np.float32), variance.astype(np.float32),
                           np.asarray(len(flat), np.int64)])
        layer.finalize_state()

    def frozen_digest(self) -> str:
        """SHA-1 of the frozen part's configuration and weights: the cache key that
        changes whenever the frozen function could."""
        h = hashlib.sha1(repr((self.name, self.config.input_size)).encode())
        for w in self.frozen.weights:
            h.update(np.ascontiguousarray(keras.ops.convert_to_numpy(w)).tobytes())
        return h.hexdigest()


def build_transfer(name: str, num_classes: int, config="paper", weights: str | None = None,
                   image_size: int = 224, head_seed: int | None = None) -> TransferNetwork:
    """Build one of the report's three transfer classifiers.

    Args:
        name: ``"resnet50_fc"``, ``"vgg16_fc"`` or ``"vgg16_half"``.
        num_classes: N, the output width.
        config: `TransferConfig` or preset name.
        weights: ``"imagenet"``, a weight file, or ``None`` (random, from Keras' global
            seed; set it first for reproducible features).
        image_size: Side of the input spectrogram image (224 from the ``nitk`` preset).
        head_seed: Seed of the new layers' initialisation (Glorot uniform), independent
            of the base's (drawn from Keras' global seed), so every fold can share one
            randomly initialised base; None draws from the global seed too.

    Returns:
        A `TransferNetwork`. Input ``(batch, image_size, image_size, 3)`` float32 in
        [0, 255]; output ``(batch, num_classes)``.

    Raises:
        KeyError: Unknown name.
        FileNotFoundError: Missing weight file (`resolve_weights`).
        ValueError: ``num_classes < 2``, or a weight file of another network.

    Reference:
        NITK report, Sec. 6.2, Figures 19-20 and the ``Network`` listing; Simonyan &
        Zisserman 2015 (VGG16); He et al. 2016 (ResNet50).
    """
    if name not in CLASSIFIERS:
        raise KeyError(f"unknown classifier '{name}'; known: {', '.join(CLASSIFIERS)}")
    if num_classes < 2:
        raise ValueError(f"need at least 2 classes, got {num_classes}")
    spec, config = CLASSIFIERS[name], get_config(config)
    base = _base(spec.network, config.input_size, resolve_weights(spec.network, weights))
    image = keras.Input((image_size, image_size, 3), name="image")
    x = ImageNetPreprocess(spec.network, name="preprocess")(image)
    if config.input_size != image_size:
        x = layers.Resizing(config.input_size, config.input_size, name="resize")(x)
    if spec.trainable_from is None:
        x, rest = base(x), []
        if spec.network == "vgg16":
            x = layers.Flatten(name="flatten")(x)
    else:
        # VGG16 is a chain of layers, so it can be cut between two of them.
        names = [layer.name for layer in base.layers[1:]]
        split = names.index(spec.trainable_from)
        for layer_name in names[:split]:
            x = base.get_layer(layer_name)(x)
        rest = names[split:]
    frozen = keras.Model(image, x, name=f"{name}_frozen")
    frozen.trainable = False

    features = keras.Input(frozen.output.shape[1:], name="frozen_features")
    y = layers.Normalization(axis=-1, name="standardise")(features) if config.standardise \
        else features
    for layer_name in rest:
        y = base.get_layer(layer_name)(y)
        if layer_name in spec.dropout_after:
            y = layers.SpatialDropout2D(config.conv_dropout, name=f"{layer_name}_dropout")(y)
    if len(y.shape) == 4:
        y = layers.Flatten(name="flatten")(y)
    def init(k):
        return keras.initializers.GlorotUniform(
            None if head_seed is None else (head_seed * 7919 + k) % 2 ** 31)

    for i in (1, 2):
        y = layers.Dense(config.head_units, activation="relu", kernel_initializer=init(i),
                         name=f"fc{i}")(y)
        y = layers.Dropout(config.head_dropout, name=f"fc{i}_dropout")(y)
    y = layers.Dense(num_classes, kernel_initializer=init(3), name="logits")(y)
    head = keras.Model(features, y, name=f"{name}_head")

    logits = keras.Model(image, head(frozen(image)), name=f"{name}_logits")
    # Scoring and serving run in inference mode whatever the caller passes.
    probs = layers.Softmax(name="probabilities")(head(frozen(image, training=False),
                                                      training=False))
    classifier = keras.Model(image, probs, name=name)
    return TransferNetwork(name, frozen, head, logits, classifier, config)
