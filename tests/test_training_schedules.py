"""Schedules of the training loop: the learning-rate warm-up and cosine decay over steps or a time budget."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from tfface.errors import InputError
from tfface.training.callbacks import CosineLearningRate, run_fraction


class RecordRate(keras.callbacks.Callback):
    """The learning rate each step ran with."""

    def __init__(self):
        super().__init__()
        self.rates: list[float] = []

    def on_train_batch_end(self, batch, logs=None):
        self.rates.append(float(self.model.optimizer.learning_rate.numpy()))


def fit(schedule: CosineLearningRate, steps: int, start_step: int = 0) -> list[float]:
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1.0), loss="mse")
    model.optimizer.build(model.trainable_variables)
    model.optimizer.iterations.assign(start_step)
    record = RecordRate()
    x = np.zeros((steps, 2), np.float32)
    model.fit(x, x[:, :1], batch_size=1, epochs=1, callbacks=[schedule, record], verbose=0)
    return record.rates


def test_run_fraction_uses_whichever_budget_is_further():
    assert run_fraction(25, 100, 1.0, None) == 0.25
    assert run_fraction(25, 100, 30.0, 60.0) == 0.5
    assert run_fraction(75, 100, 30.0, 60.0) == 0.75
    assert run_fraction(500, 100, 0.0, None) == 1.0


def test_cosine_rate_over_steps():
    schedule = CosineLearningRate(1e-3, 1e-5, total_steps=10)
    rates = fit(schedule, 10)
    want = [1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi * s / 10)) for s in range(10)]
    np.testing.assert_allclose(rates, want, rtol=1e-6)
    assert schedule.rate(1.0) == pytest.approx(1e-5)


def test_resumed_run_continues_the_schedule():
    rates = fit(CosineLearningRate(1e-3, 0.0, total_steps=10), 3, start_step=5)
    np.testing.assert_allclose(rates[0], 0.5e-3, rtol=1e-6)
    assert rates[0] > rates[1] > rates[2]


def test_time_budget_anneals_to_the_final_rate():
    # A budget of a microsecond is used up before the first step: every step runs at the final rate.
    rates = fit(CosineLearningRate(1e-3, 2e-5, total_steps=1_000_000, time_limit=1e-6), 4)
    np.testing.assert_allclose(rates, 2e-5, rtol=1e-6)


def test_warm_up_ramps_linearly_into_the_cosine():
    schedule = CosineLearningRate(1e-3, 1e-5, total_steps=20, warmup_steps=4)
    rates = fit(schedule, 8)
    cosine = [1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi * s / 20)) for s in range(8)]
    np.testing.assert_allclose(rates, [c * min(s + 1, 4) / 4 for s, c in enumerate(cosine)], rtol=1e-6)
    assert rates[0] < rates[1] < rates[2] < rates[3] > rates[4]


def test_resumed_run_continues_the_warm_up():
    rates = fit(CosineLearningRate(1e-3, 1e-3, total_steps=100, warmup_steps=10), 2, start_step=4)
    np.testing.assert_allclose(rates, [0.5e-3, 0.6e-3], rtol=1e-6)


def test_negative_warm_up_raises():
    with pytest.raises(InputError, match="warmup_steps"):
        CosineLearningRate(1e-3, 1e-5, total_steps=10, warmup_steps=-1)


def test_pretraining_rate_is_constant_by_default():
    from tfface.training.config import CONFIGS
    from tfface.training.loop import pretraining_rate

    assert pretraining_rate(CONFIGS["small"]) == CONFIGS["small"].pretrain_learning_rate


def test_pretraining_rate_decays_along_a_cosine_to_the_final_rate():
    from tfface.training.config import CONFIGS
    from tfface.training.loop import pretraining_rate

    config = CONFIGS["photos"].replace(pretrain_steps=1000, pretrain_learning_rate=1e-3,
                                       pretrain_final_learning_rate=1e-5)
    schedule = pretraining_rate(config)
    rates = [float(schedule(step)) for step in (0, 500, 1000, 2000)]
    assert rates[0] == pytest.approx(1e-3)
    assert rates[1] == pytest.approx(1e-5 + (1e-3 - 1e-5) / 2, rel=1e-5)  # half-way down the cosine
    assert rates[2] == pytest.approx(1e-5, rel=1e-5) and rates[3] == pytest.approx(1e-5, rel=1e-5)


@pytest.mark.parametrize("final", [-1e-6, 2e-3])
def test_pretraining_final_rate_outside_the_range_raises(final):
    from tfface.training.config import CONFIGS

    with pytest.raises(InputError, match="pretrain_final_learning_rate"):
        CONFIGS["photos"].replace(pretrain_final_learning_rate=final)
