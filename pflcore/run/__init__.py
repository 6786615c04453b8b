"""Layer 6, run: running a federation.

The round loop, checkpoints and resume, signals and process cleanup, the
embedded simulation, the ``flwr run`` and Ray cluster launchers, and the
package front door (``python -m <package>.main``). Imports the layers below.
"""
