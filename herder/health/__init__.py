"""Health checking: active probes (TCP, HTTP, exec, DNS), rise/fall hysteresis, passive errors.

Layout (one concern per module, as h11 does it):

* :mod:`herder.health.base` -- the vocabulary: :class:`~herder.health.base.Layer` (HAProxy's
  check status codes), :class:`~herder.health.base.ProbeResult`, the probe registry and the
  config keys every check type shares;
* :mod:`herder.health.hysteresis` -- HAProxy's single-counter rise/fall (pure);
* :mod:`herder.health.timing` -- inter / fastinter / downinter / spread (pure);
* :mod:`herder.health.classify` -- turning errors, statuses and answers into results (pure);
* :mod:`herder.health.tcp`, :mod:`~herder.health.http`, :mod:`~herder.health.exec`,
  :mod:`~herder.health.dns` -- one probe kind per file, each registering its check type;
* :mod:`herder.health.passive` -- consecutive-error ejection with a cap (pure policy);
* :mod:`herder.health.engine` -- the ``health`` component: one task per server and check,
  fed by the pool state, reporting transitions back to it.

This package's ``__init__`` imports nothing, so that the pure modules can be imported
without pulling in asyncio.
"""
