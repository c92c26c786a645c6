"""jaxmlp.optim_check: the step-by-step comparison of an optimizer with optax, and its report (bit-for-bit
agreement reported as 0, a difference found and placed at its worst step, complex parameters, SGD without
moments, a gradient sequence without its step axis).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _optimizers import WEIGHTS_ONLY, complex_problem, make_grads, make_params

from jaxmlp import optim, optim_check


@pytest.mark.parametrize("trace_fn, kwargs", [
    (optim_check.adam_trace, dict(b1=0.8)),
    (optim_check.adam_trace, dict(b1=0.8, nesterov=True)),
    (optim_check.adam_trace, dict(learning_rate=optax.cosine_decay_schedule(1e-2, 100))),
    (optim_check.adamw_trace, dict(weight_decay=0.1, mask=WEIGHTS_ONLY)),
    (optim_check.adamw_trace, dict(weight_decay=0.1, nesterov=True)),
], ids=["adam", "nadam", "adam-schedule", "adamw-masked", "nadamw"])
def test_trace_reports_bit_for_bit_agreement(trace_fn, kwargs):
    params = make_params(jnp.float32)
    grads = make_grads(params, 100)
    trace = trace_fn(params, grads, **{"learning_rate": 1e-2, **kwargs})
    assert trace.param_diff.shape == trace.m_hat_diff.shape == trace.v_hat_diff.shape == (100,)
    assert trace.max_param_diff == 0.0 and trace.max_param_rel_diff == 0.0
    assert np.max(trace.m_hat_diff) == 0.0 and np.max(trace.v_hat_diff) == 0.0
    text = str(trace)
    assert "(last)" in text and "(worst)" in text and "|Δm̂|max" in text


def test_trace_compares_complex_parameters():
    params, grads = complex_problem(jnp.complex64, 30)
    assert optim_check.adam_trace(params, grads, learning_rate=1e-2).max_param_diff == 0.0
    # A reference whose updates differ from ours in the imaginary part only: the trace must see it.
    conjugated = optax.chain(optax.stateless(lambda u, p: jax.tree.map(jnp.conj, u)), optax.sgd(0.1))
    trace = optim_check.compare_with_optax(optim.sgd(0.1), conjugated, params, grads)
    assert trace.max_param_diff > 1e-3


def test_compare_with_optax_detects_a_difference():
    params = make_params(jnp.float32)
    grads = make_grads(params, 100)
    trace = optim_check.compare_with_optax(optim.adam(1e-2), optax.adam(1e-2, b1=0.5), params, grads,
                                           b1=0.9, b2=0.999)
    assert trace.max_param_diff > 1e-3
    assert np.max(trace.m_hat_diff) > 1e-2
    assert 1 <= trace.worst_step <= 100
    assert f"{trace.worst_step} (worst)" in str(trace)


def test_compare_with_optax_sgd_has_no_moments():
    params = make_params(jnp.float32)
    grads = make_grads(params, 30)
    trace = optim_check.compare_with_optax(optim.sgd(0.1, momentum=0.9), optax.sgd(0.1, momentum=0.9), params, grads)
    assert trace.max_param_diff == 0.0 and trace.m_hat_diff is None
    assert "|Δm̂|max" not in str(trace)
    with pytest.raises(ValueError, match="holds no Adam state"):
        optim_check.compare_with_optax(optim.sgd(0.1), optax.sgd(0.1), params, grads, b1=0.9, b2=0.999)


def test_compare_with_optax_checks_the_gradient_sequence():
    params = make_params(jnp.float32)
    with pytest.raises(ValueError, match="leading|shape"):
        optim_check.compare_with_optax(optim.sgd(0.1), optax.sgd(0.1), params, params)  # no step axis
