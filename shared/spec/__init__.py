"""The job spec a user POSTs and every check it passes before anything is stored: its datasets, rewards, `args`
(GRPOConfig), `peft_config` (LoraConfig), resources, and the problems reported when a check fails."""
