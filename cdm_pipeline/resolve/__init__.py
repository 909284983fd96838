"""Stage 4: identity resolution in Splink's shape, with the guards Splink lacks.

``profiles`` (collapse identical records) -> ``blocking`` (candidate pairs) -> ``comparisons``
(levels per field) -> ``scoring`` (Fellegi-Sunter weights; u sampled, m by guarded EM) ->
``clustering`` (union by weight that never joins records with cannot-link evidence) -> ``ids``
(customer ids that survive reruns, merges and splits).

``engine`` runs them as plan -> compare -> link; ``incremental`` plans only what tonight changes;
``shards`` lets the compare phase run in other processes.
"""
