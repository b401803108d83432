"""The local fine-tune stage: tune a multimodal model on the generated ICM data, then moderate.

- :mod:`finetune.config`: settings (dataclasses, YAML, ``--set`` overrides);
- :mod:`finetune.data`: examples from store runs or LLaVA/ShareGPT files, image-level split,
  mixed SFT;
- :mod:`finetune.families`: what differs between LLaVA, LLaVA-NeXT, Qwen2(.5)-VL, Idefics3 and
  SmolVLM;
- :mod:`finetune.collate`: chat templates, assistant-only labels, padding, pixel batching;
- :mod:`finetune.tiny`: icm-tiny, the LLaVA assembled from shipped parts;
- :mod:`finetune.loading`: models, adapters and fine-tune outputs from local folders;
- :mod:`finetune.model_setup`: freezing, LoRA wrapping, optimizer groups, strict reloads;
- :mod:`finetune.hf_trainer`: ``transformers.Trainer`` with our loss, data order, validation and
  checkpoint files;
- :mod:`finetune.run`: one fine-tune end to end (Trainer arguments, outputs, the record);
- :mod:`finetune.callbacks`: the loss curve (progress, history, store) and step timing;
- :mod:`finetune.records`: the fine-tune's rows in the store;
- :mod:`finetune.train`: ``python -m finetune.train``, what launchers run (one process or many:
  accelerate DDP/FSDP/DeepSpeed configs in ``finetune/configs``);
- :mod:`finetune.moderate`: batched verdicts, scores and explanations into the store;
- :mod:`finetune.synthetic`: config-built models with random weights for tests and benchmarks;
- :mod:`graphs.commands.finetune`: ``icm finetune`` and ``icm moderate``.
"""
