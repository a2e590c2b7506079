"""A first model in about two hours on two CPU cores: the compact CQA-Face, 2.5 epochs of the
celeba-112 training identities with a cosine decay, so that it ends converged for its budget.
The long recipe for this machine is `cpu_celeba_compact`."""

from dataclasses import replace

from trainer.configs.cpu_celeba_compact import config as long_run

config = replace(
    long_run,
    name="cpu_celeba_compact_short",
    epochs=2.5,
    warmup_epochs=0.1,
    schedule="cosine",
    milestones=(),
    final_lr=None,
    final_epoch=None,
    compile=True,
    val_every=None,
)
