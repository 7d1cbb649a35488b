"""Argument checks shared by the autoencoder builders.

Every builder validates its hyperparameters and the input shape before it creates a single layer, and
says in the error which values would work.
"""

import operator
from collections.abc import Sequence

ACTIVATIONS = ("relu", "leaky_relu", "elu", "selu")


def _as_int(value: object) -> int | None:
    """Return value as a plain int when it is integral (numpy integers included), else None."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def check_input_shape(
    model_name: str, input_shape: Sequence[int], *, multiple: int, minimum: int
) -> tuple[int, int, int]:
    """Check an (height, width, channels) shape and return it as three ints.

    Height and width must each be a multiple of `multiple` (the total downsampling factor of the
    model) and at least `minimum`; channels must be 1 (grayscale) or 3 (RGB).
    """
    examples = ", ".join(str(size) for size in _example_sizes(multiple, minimum))
    requirement = (
        f"{model_name} needs a height and width that are multiples of {multiple} and at least "
        f"{minimum} (e.g. {examples}), and 1 or 3 channels"
    )
    try:
        dimensions = tuple(_as_int(value) for value in input_shape)
    except TypeError:
        raise ValueError(f"{requirement}; got {input_shape!r}") from None
    if len(dimensions) != 3 or None in dimensions:
        raise ValueError(f"{requirement}; got {input_shape!r}")
    height, width, channels = dimensions
    fits = all(size >= minimum and size % multiple == 0 for size in (height, width))
    if not fits or channels not in (1, 3):
        raise ValueError(f"{requirement}; got {tuple(input_shape)!r}")
    return height, width, channels


def _example_sizes(multiple: int, minimum: int) -> list[int]:
    """The three smallest valid sizes, plus 256 when valid (the tool's default size)."""
    first = max(multiple, -(-minimum // multiple) * multiple)
    sizes = [first + index * multiple for index in range(3)]
    if 256 % multiple == 0 and 256 >= first and 256 not in sizes:
        sizes.append(256)
    return sizes


def check_positive_int(name: str, value: object) -> int:
    """Return value as an int, or raise ValueError naming the hyperparameter and the bad value."""
    number = _as_int(value)
    if number is None or number < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return number


def check_non_negative_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{name} must be a number >= 0; got {value!r}")
    return float(value)


def check_filters(name: str, filters: object, *, levels: int | None = None) -> list[int]:
    """Return filter widths as a list with one positive int per level.

    An int is repeated `levels` times (only where the builder has a `levels` hyperparameter); a
    sequence must have exactly `levels` entries when `levels` is given, and at least one otherwise.
    """
    if _as_int(filters) is not None:
        if levels is None:
            raise ValueError(f"{name} must be a list of filter widths, one per level; got {filters!r}")
        return [check_positive_int(name, filters)] * levels
    if isinstance(filters, (str, bytes)) or not isinstance(filters, Sequence) or not filters:
        raise ValueError(f"{name} must be a positive integer or a list of them; got {filters!r}")
    if levels is not None and len(filters) != levels:
        raise ValueError(f"{name} must give one width per level ({levels} levels); got {filters!r}")
    return [check_positive_int(name, value) for value in filters]


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    """Return value if it is one of `choices`, else raise ValueError listing them."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value
