"""nbjobs: run Jupyter notebooks as recorded, scheduled, resource-managed jobs."""

from nbjobs.notebook.results import RESULT_MIME_TYPE, record

__version__ = "0.1.0"
__all__ = ["RESULT_MIME_TYPE", "__version__", "record"]
