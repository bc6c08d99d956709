"""fedsynth: federated, differentially private synthetic RNA-seq data.

Follow one run through these modules, one concept each:

``io`` (read/write matrices) -> ``preprocess`` (validate, normalise) ->
``session`` (rendezvous, authentication, key agreement, deadlines) ->
``secure_aggregation`` (noisy secure sums over CrypTen shares) ->
``accounting`` (one accountant for everything revealed) ->
``model`` (the conditional VAE and the model file) -> ``train`` (one site's
protocol) -> ``synthesize`` -> ``evaluation``. ``cli`` and ``simulate`` are
thin shells; ``_crypten_compat`` holds every CrypTen 0.4.1 fix.
"""

__version__ = "0.1.0"
