"""l2o: a reference reproduction of "Learning to Optimize Neural Nets" (Li & Malik, 2017).

One flat module per concept of the paper:

- :mod:`l2o.data`      datasets, random projection and standardisation
- :mod:`l2o.problems`  the objective functions (two-layer nets), batched over trajectories
- :mod:`l2o.baselines` the seven hand-engineered optimizers and the training runner
- :mod:`l2o.features`  the state features Phi and observation features Psi (paper section 3.6)
- :mod:`l2o.policy`    the coordinatewise LSTM policy pi
- :mod:`l2o.lqg`       LQG under a KL constraint (the psi update)
- :mod:`l2o.badmm`     Bregman ADMM numerics between ψ and π: θ-step targets, dual steps, step size
- :mod:`l2o.dynamics`  fitted linear-Gaussian dynamics and priors
- :mod:`l2o.gps`       convolutional GPS with Bregman ADMM; policy files
- :mod:`l2o.gps_rollout` GPS's rollouts: the cost, the actors (teachers, ψ, π), the samples
- :mod:`l2o.gps_study` GPS arms scored on validation seeds; choosing the shipped π
- :mod:`l2o.outer`     the same π meta-trained by truncated BPTT or antithetic ES
- :mod:`l2o.outer_study` the three meta-trainers compared: held-out rows, transfer, verdict
- :mod:`l2o.l2l`       the L2L baseline
- :mod:`l2o.learned`   the learned optimizers as experiment runs; the shipped files
- :mod:`l2o.experiments` the runner, the experiment grid and its cache
- :mod:`l2o.tuning`    the baselines tuned by grid search on the training objective
- :mod:`l2o.figures`   the paper's figures: all methods on a panel, the grid as tasks
- :mod:`l2o.report`    the paper's claims as computed checks; the deviations table
- :mod:`l2o.plotting`  one figure style: colours, line styles, legends
- :mod:`l2o.book`      the executable book: running chapters, provenance, building
- :mod:`l2o.browser`   the built book checked in a headless browser
- :mod:`l2o.cli`       argument checks shared by the commands; the ``l2o`` script
- :mod:`l2o.record`    run records: provenance, atomic writes, JSON with non-finite numbers
- :mod:`l2o.paths`     the project folder (``$L2O_ROOT``) every results path is taken from
- :mod:`l2o.rollout`   the one rollout loop every optimizer runs through
- :mod:`l2o.parallel`  one torch thread per worker; local processes and Dask executors
- :mod:`l2o.gps_sweep` chapter 5's studies on a small objective: sweep, ceiling, transfer
"""

__version__ = "0.1.0"
