"""Training the tool-calling SmolLM2 (docs/architecture.md, "Agents that use tools").

`trajectories` runs the real tool loop with an oracle in place of the model to make training
examples; `finetune` fine-tunes the embedded checkpoint's top layers on them. It sits above
`harness` (it drives `ToolLoop`) and nothing in the engine imports it: evaluation never trains.
`scripts/train_tool_caller.py` (`make tool-model`) is its command line.
"""
