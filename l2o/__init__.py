"""l2o: a reference reproduction of "Learning to Optimize Neural Nets" (Li & Malik, 2017).

One flat module per concept of the paper:

- :mod:`l2o.data`      datasets, random projection and standardisation
- :mod:`l2o.problems`  the objective functions (two-layer nets), batched over trajectories
- :mod:`l2o.baselines` the seven hand-engineered optimizers and the training runner
- :mod:`l2o.features`  the state features Phi and observation features Psi (paper section 3.6)
- :mod:`l2o.policy`    the coordinatewise LSTM policy pi
- :mod:`l2o.lqg`       LQG under a KL constraint (the psi update)
- :mod:`l2o.dynamics`  fitted linear-Gaussian dynamics and priors
- :mod:`l2o.gps`       convolutional GPS with Bregman ADMM; policy files
- :mod:`l2o.gps_study` GPS arms scored on validation seeds; choosing the shipped π
- :mod:`l2o.outer`     the same π meta-trained by truncated BPTT or antithetic ES
- :mod:`l2o.outer_study` the three meta-trainers compared: held-out rows, transfer, verdict
- :mod:`l2o.l2l`       the L2L baseline
- :mod:`l2o.learned`   the learned optimizers as experiment runs; the shipped files
- :mod:`l2o.cli`       argument checks shared by the commands; the ``l2o`` script
- :mod:`l2o.record`    run records: provenance, atomic writes, JSON with non-finite numbers
"""

__version__ = "0.1.0"
