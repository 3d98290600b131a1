"""What researchers and data engineers read about a release: the run report (HTML) and the
data dictionary. `write_report` and `write_data_dictionary` are called at the end of a run."""

from omopflow.report.dictionary import write_data_dictionary
from omopflow.report.report import write_report

__all__ = ["write_data_dictionary", "write_report"]
