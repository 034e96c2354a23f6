"""Active liveness on LFW: the signals' distributions, a session set, and its pass rates.

Measured here, step by step (``facesvc eval liveness``):

1. every LFW photo's centre face (LFW's person): its face-mesh signals (eye and mouth
   openness, yaw) and embedding, cached in an SQLite file so reruns are instant;
2. the distributions (percentiles) the thresholds in ``LivenessThresholds`` were set from;
3. sessions built from those photos (``build_session_set``, a committed list of file names):
   genuine sequences of one person's photos, and attacks;
4. every session replayed frame by frame through ``observe_frame`` (the service's own frame
   analysis) and ``LivenessChecker`` (the service's own rules).

Modules: ``signals`` (1, 2: the photos measured, their SQLite cache, the distributions),
``sessions`` (3: the set and the labels it is built from), ``replay`` (4: sessions through
the service's checker), ``report`` (the pass rates and the evidence for each threshold),
``evaluate`` (the command: all of it in this order).
"""
