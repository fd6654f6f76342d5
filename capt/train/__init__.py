"""Training: one loop for every model, and what each model trains on.

``loop.fit`` (Adam, gradient clipping, one plateau rule for the learning-rate decay, best epoch and
early stopping, checkpoints every epoch) is shared by the teacher, the students and BLIP; a task
gives it a loss and a validation. ``captioner`` is the Show-Attend-Tell task, ``distill`` the
students' KD losses against a frozen teacher, ``features`` the frozen teacher encoder's fp16 cache,
``pretrain`` the embedded profile's trunk pretraining and ``distributed`` DDP under torchrun; the
state-dict files they all write are capt.models.checkpoint's.
"""
