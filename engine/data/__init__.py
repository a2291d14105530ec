"""Data: training datasets and loaders (:mod:`.datasets`), the resumable sharded sampler
(:mod:`.samplers`), ImageNet folders that survive bad files (:mod:`.image_folder`), and the
evaluation sets' published folder layouts (:mod:`.eval_sets`)."""

__all__ = ["datasets", "eval_sets", "image_folder", "samplers"]
