"""Layer-wise SGD with the beta-modified momentum of Etienne et al. (2018), eq. 6.

Etienne et al. (Sec. 3.1) saw much larger gradients on the convolution weights than on
the Bi-LSTM's (their Fig. 3) and tried separate learning rates, momenta and a new
factor beta per layer group, but "were not able to draw any definite conclusion in
favor of layer-wise adjustment". Their results use SGD with momentum (Sec. 3); the
layer-wise optimiser is offered here as the option they describe.
"""

from __future__ import annotations

import keras
from keras import ops

_GROUP_KEYS = {"match", "learning_rate", "momentum", "beta"}


@keras.saving.register_keras_serializable(package="keras_ser")
class LayerwiseSGD(keras.optimizers.Optimizer):
    """SGD with momentum whose learning rate, momentum and beta differ per layer group.

    For every variable ``w`` with gradient ``g`` (eq. 6)::

        v_t = gamma * v_{t-1} + eta * g
        w  <- w - beta * v_t

    where ``(eta, gamma, beta)`` are those of the variable's group. With ``beta = 1``
    this is Keras' (non-Nesterov) SGD with momentum; beta scales the step without
    changing how fast the velocity forgets ("does not accumulate in the velocity",
    Sec. 3.1).

    A variable belongs to the first group whose ``match`` string occurs in its path
    (``variable.path``, e.g. ``"crnn/conv_block_0/conv/kernel"``); variables of no
    group use ``learning_rate``, ``momentum`` and ``beta``.

    Args:
        learning_rate: eta of the ungrouped variables (float or a Keras schedule).
        momentum: gamma of the ungrouped variables, in [0, 1).
        beta: beta of the ungrouped variables, > 0.
        groups: ``{name: {"match": str, "learning_rate": float, "momentum": float,
            "beta": float}}``; omitted keys take the ungrouped values. The groups'
            learning rates are constants.
        name, **kwargs: `keras.optimizers.Optimizer` arguments (``weight_decay``,
            ``clipnorm``, ...).

    Raises:
        ValueError: Momentum outside [0, 1), beta <= 0, a group without ``match`` or
            with unknown keys.

    Reference:
        Etienne et al., "CNN+LSTM Architecture for Speech Emotion Recognition with Data
        Augmentation", 2018, Sec. 3.1, eq. 6.
    """

    def __init__(self, learning_rate=0.01, momentum: float = 0.9, beta: float = 1.0,
                 groups: dict | None = None, name: str = "layerwise_sgd", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.momentum = float(momentum)
        self.beta = float(beta)
        self.groups = {}
        for group, spec in (groups or {}).items():
            unknown = sorted(set(spec) - _GROUP_KEYS)
            if unknown or "match" not in spec:
                raise ValueError(f"group {group!r} needs 'match' and takes only "
                                 f"{sorted(_GROUP_KEYS)}; got {sorted(spec)}")
            self.groups[group] = {"match": str(spec["match"]),
                                  **{k: float(spec[k]) for k in spec if k != "match"}}
        for group, spec in [("ungrouped", {"momentum": self.momentum, "beta": self.beta}),
                            *self.groups.items()]:
            if not 0.0 <= spec.get("momentum", self.momentum) < 1.0:
                raise ValueError(f"momentum of {group!r} must be in [0, 1), got "
                                 f"{spec['momentum']}")
            if spec.get("beta", self.beta) <= 0.0:
                raise ValueError(f"beta of {group!r} must be > 0, got {spec['beta']}")

    def group_of(self, path: str) -> str | None:
        """Name of the group of a variable path, or None."""
        for group, spec in self.groups.items():
            if spec["match"] in path:
                return group
        return None

    def hyperparameters(self, path: str) -> tuple:
        """``(eta, gamma, beta)`` of a variable path; eta is None for ungrouped ones
        (they follow ``learning_rate``)."""
        spec = self.groups.get(self.group_of(path), {})
        return (spec.get("learning_rate"), spec.get("momentum", self.momentum),
                spec.get("beta", self.beta))

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.velocities = [self.add_variable_from_reference(v, "velocity") for v in variables]
        self._per_variable = [self.hyperparameters(v.path) for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        eta, gamma, beta = self._per_variable[index]
        eta = ops.cast(learning_rate if eta is None else eta, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        velocity = self.velocities[index]
        self.assign(velocity, ops.add(ops.multiply(velocity, gamma),
                                      ops.multiply(gradient, eta)))
        self.assign_sub(variable, ops.multiply(velocity, beta))

    def get_config(self):
        config = super().get_config()
        config.update(momentum=self.momentum, beta=self.beta, groups=self.groups)
        return config


def crnn_optimizer(conv_lr: float = 0.01, recurrent_lr: float = 0.01, dense_lr: float = 0.01,
                   conv_momentum: float = 0.9, recurrent_momentum: float = 0.9,
                   momentum: float = 0.9, conv_beta: float = 1.0,
                   recurrent_beta: float = 1.0) -> LayerwiseSGD:
    """`LayerwiseSGD` with the groups of `keras_ser.models.crnn.CRNN`: convolution blocks,
    recurrent layers, and the classifier (ungrouped).

    Reference:
        Etienne et al. 2018, Sec. 3.1 (separate rates and momenta for the
        convolutional and recurrent parts).
    """
    from keras_ser.models.crnn import LAYER_GROUPS

    return LayerwiseSGD(
        learning_rate=dense_lr, momentum=momentum,
        groups={"conv": {"match": LAYER_GROUPS["conv"], "learning_rate": conv_lr,
                         "momentum": conv_momentum, "beta": conv_beta},
                "recurrent": {"match": LAYER_GROUPS["recurrent"],
                              "learning_rate": recurrent_lr,
                              "momentum": recurrent_momentum, "beta": recurrent_beta}})
