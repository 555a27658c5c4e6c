"""The command-line entry points, in one place.

=================================  ===============================================
``python -m vpgkit.train``         :mod:`vpgkit.cli.train` (Hydra recipes)
``python -m vpgkit.evaluate``      :mod:`vpgkit.cli.evaluate` (DEMON-format evaluation)
``python -m vpgkit.publish``       :mod:`vpgkit.cli.publish` (model card, hub / local folder)
``python -m vpgkit.lmms_tasks``    :mod:`vpgkit.cli.lmms_tasks` (lmms-eval task files for DEMON folders)
``python -m vpgkit.launch NAME``   :mod:`vpgkit.launch` (accelerate configs)
=================================  ===============================================

``vpgkit.train``, ``vpgkit.evaluate``, ``vpgkit.publish`` and ``vpgkit.lmms_tasks`` stay importable and
runnable with ``-m``; they re-export these modules. ``python -m vpgkit.cli.train`` etc. work too.
"""
