"""Kubeflow Pipelines front door: runtime adapter for components and pipeline build helpers.

:mod:`privfed.kubeflow.adapter` runs inside the component containers and holds the little glue
between KFP artifacts and ``privfed.stages.<stage>.run``; :mod:`privfed.kubeflow.settings`
turns the ``kubeflow`` params section into task settings at compile time;
:mod:`privfed.kubeflow.project` compiles a checkout's ``pipelines/`` in that checkout (it never
imports them); :mod:`privfed.kubeflow.client` talks to a KFP API server;
:mod:`privfed.kubeflow.local` runs the compiled DAG with KFP's own local runner.
"""
