"""lbrec: a declarative reconciler for a weighted HTTP load balancer over Docker backends.

One installed package, two halves: :mod:`lbrec.reconciler` (the ``lbrec`` command) and
:mod:`lbrec.proxy` (the data plane, ``lbrec proxy``). In the repository they are the top-level
folders ``reconciler/`` and ``proxy/``; this folder links them so that the repository and an
installed wheel import them by the same names (and no generic top-level ``proxy`` is installed).
"""
