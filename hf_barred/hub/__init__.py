"""The Hugging Face Hub: pushing datasets and models, with cards generated from templates.

- :mod:`.push`: datasets as configurations of one repo (a BARRED run, an APT set);
- :mod:`.model_card`, :mod:`.dataset_card`: cards from the Jinja templates in ``templates/``;
- :mod:`.markdown`: user text rendered so that it cannot break a card.
"""

from .push import push_barred_run, push_dataset

__all__ = ["push_barred_run", "push_dataset"]
