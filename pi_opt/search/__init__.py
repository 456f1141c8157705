"""Multi-objective search of ReLU-reduced networks into Pareto fronts."""

from pi_opt.search._baseline import obtain_baseline, resolve_spec
from pi_opt.search._config import ChainSpec, SearchConfig
from pi_opt.search._session import COUNTING, SearchSession, run_search
from pi_opt.search._study import STUDY_NAME, make_storage

__all__ = ["COUNTING", "STUDY_NAME", "ChainSpec", "SearchConfig", "SearchSession",
           "make_storage", "obtain_baseline", "resolve_spec", "run_search"]
