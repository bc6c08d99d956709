"""Generators behind one interface (:mod:`~fedsynth.generators.base`), a registry
(:mod:`~fedsynth.generators.registry`), the protocol every site runs with any of
them (:mod:`~fedsynth.generators.protocol`) and the model file
(:mod:`~fedsynth.generators.modelfile`). One module per generator: ``cvae``,
``gaussian``, ``pgm``, ``marginals``.
"""
