"""Secure aggregation (Flower's SecAgg+): the one place PrivFed uses Flower's legacy API.

In flwr 1.41 SecAgg+ exists only for the legacy stack: ``DefaultWorkflow`` with a
``SecAggPlusWorkflow`` fit workflow, a legacy ``flwr.server.strategy`` strategy in a
``LegacyContext`` on the server, and ``secaggplus_mod`` around a handler that speaks
``FitIns``/``FitRes`` on the hospital. Everything else in PrivFed (roll call, final evaluation,
the non-secure rounds) stays on the Message API. This module is the seam:

* hospital side (:mod:`.hospital`, loaded by the ClientApp): a mod that hands only SecAgg+
  messages to Flower's ``secaggplus_mod``, and a train handler that trains as the Message
  API path does and replies the weighted update ``n / max_weight x (trained - global)``;
* server side (:mod:`.server`, run by the ServerApp): the rounds over the same grid and
  :class:`~privfed.federated.recorder.RoundRecorder`, returning the final weights.

The halves share only the arithmetic's contract (this docstring) and :data:`STAGES`; neither
imports the other, and neither imports :mod:`privfed.federated.server`.

Why updates and not weights: SecAgg+ clips every value to ``±clipping_range`` and quantizes
it. An update is small, so the clipping range (and with it the quantization step) can be
small; weights and fixed buffers such as normalizers can be large. Why the weighting is done
here and not by Flower: Flower quantizes each hospital's weight ``n / max_weight`` to
``1 / quantization_range``, which perturbs FedAvg's weights; here hospitals report
``num_examples = max_weight`` to Flower (so its factor is exactly 1), weigh their update by the
exact ``n / max_weight`` themselves, and the server divides the unmasked sum by the total
``sum(n) / max_weight`` (the ``num-examples`` each hospital also reports, as on the Message API
path). The result is FedAvg's mean up to :meth:`SecureAggregationSection.error_bound`.

What the server still sees per hospital: the metrics a train reply carries on either path
(train loss, validation of the previous global model, ``num-examples``, timings, its DP
accountant history), never its update.
"""

from __future__ import annotations

__all__ = ["STAGES"]

#: SecAgg+ stages in protocol order (Flower's ``Stage`` values).
STAGES = ("setup", "share_keys", "collect_masked_vectors", "unmask")
