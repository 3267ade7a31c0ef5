"""Array-namespace dispatch so that every formula is written once and runs on NumPy or JAX.

Formulas use Python operators for arithmetic and the few functions below for the rest. Given
any JAX array (a tracer inside `jit`/`vmap` included) they use `jax.numpy`; otherwise NumPy.
This is what lets the sweep's NumPy twin and per-configuration loop call the very same
functions as the jitted engine: there is no second copy of any formula.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import get_opaque_trace_state


def namespace(*arrays):
    """`jax.numpy` if any argument is a JAX array, else `numpy`."""
    return jnp if any(isinstance(a, jax.Array) for a in arrays) else np


def where(condition, if_true, if_false):
    return namespace(condition, if_true, if_false).where(condition, if_true, if_false)


def maximum(a, b):
    return namespace(a, b).maximum(a, b)


def minimum(a, b):
    return namespace(a, b).minimum(a, b)


def floor(a):
    return namespace(a).floor(a)


def ceil(a):
    return namespace(a).ceil(a)


def divides(divisor, value):
    """`value` is a whole multiple of `divisor`, without float `%`.

    XLA on CPU lowers float remainder to a slow scalar call; `x == y * floor(x / y)` is exact for
    the integer-valued floats used here (below 2^24 in float32).
    """
    return value == divisor * floor(value / divisor)


def at_leading(table, index):
    """`table[index[0], index[1], ...]` over its leading dimensions, for valid indices that
    may be traced. In JAX one `dynamic_slice` that does not wrap negative indices: `x[i]`
    would add three operations per index, which tracing, lowering and compiling each pay
    for."""
    if not isinstance(table, jax.Array) and not any(isinstance(i, jax.Array) for i in index):
        return np.asarray(table)[tuple(index)]
    table = jnp.asarray(table)
    n = len(index)
    block = jax.lax.dynamic_slice(table, tuple(index) + (0,) * (table.ndim - n),
                                  (1,) * n + table.shape[n:], allow_negative_indices=False)
    return block.reshape(table.shape[n:])


def lookup(table, code):
    """`table[code]` for a constant tuple `table` and an integer code array (or int). In JAX
    one gather with no wrap of negative indices (codes are valid by construction): half the
    operations of `x[i]`."""
    if isinstance(code, jax.Array):
        return jnp.asarray(table).at[code.astype(jnp.int32)].get(
            mode="promise_in_bounds", wrap_negative_indices=False)
    return np.asarray(table)[np.asarray(code).astype(np.int32)]


def materialize(a):
    """Compute `a` on its own (sub-grid) shape before it is broadcast into larger arrays.

    Under jit, XLA would otherwise fuse the whole formula into the full-size loop and
    evaluate every term once per configuration; `optimization_barrier` asks it to keep the
    term's array materialised. A no-op in NumPy. Measured on XLA CPU (jaxlib 0.10.2): no
    barrier survives into the optimized HLO and fusions cross them, so on the CPU what keeps
    a term on its own sub-grid is that the kernel's terms program returns it.
    """
    if isinstance(a, jax.Array):
        return jax.lax.optimization_barrier(a)
    return a


# The results of `reused` functions while `reusing` is in effect (None: not in effect).
_results: contextvars.ContextVar[dict | None] = contextvars.ContextVar("results", default=None)


@contextlib.contextmanager
def reusing():
    """Within: a `reused` function called again with the same arguments (the same objects:
    formulas pass frozen dataclasses and arrays, never mutated) in the same trace returns its
    first result instead of computing it again. A formula such as `dense_shard_degree(cfg)`
    is called by a dozen others; traced, each call would add its operations to the program
    again, and tracing, lowering and XLA's passes before its common-subexpression elimination
    pay for every copy. Results are dropped on exit: nothing outlives one trace. Nested, the
    outer results stay in effect."""
    if _results.get() is not None:
        yield
        return
    token = _results.set({})
    try:
        yield
    finally:
        _results.reset(token)


def _identity(value):
    """A value as part of a `reused` key: plain Python scalars by value, anything else by
    identity (arrays and tracers are not hashable by value)."""
    if isinstance(value, (bool, int, float, str, type(None))):
        return type(value), value
    return id(value)


def reused(function):
    """`function`, computed once per distinct argument objects while `reusing` is in
    effect (a pure function of its arguments)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        results = _results.get()
        if results is None:
            return function(*args, **kwargs)
        key = (function, *map(_identity, args),
               *((k, _identity(v)) for k, v in sorted(kwargs.items())))
        # A result made inside a loop or branch body is that body's tracer: it is reused
        # only in the trace that made it, never leaked out of it or into another.
        trace = get_opaque_trace_state()
        if key in results:
            value, made_in, _ = results[key]
            if made_in == trace:
                return value
            return function(*args, **kwargs)
        value = function(*args, **kwargs)
        # The arguments are kept with the result, so that no other object takes their
        # identity while it is cached.
        results[key] = (value, trace, (args, kwargs))
        return value

    return wrapper
