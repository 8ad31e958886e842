"""Synthetic safety-alignment data for LLM agents (AgentAlign, Zhang et al. 2025): taxonomy, behavior chains, simulated tools, instructions, responses, SFT and AgentHarm scoring.

Modules:

- `agentalign.agentharm.evaluate`: Score any model on AgentHarm (Andriushchenko et al., 2024) the way the AgentAlign paper does (Table 1), on the official implementation: `inspect_ai` runs the agent loop and `inspect_evals`' AgentHarm tasks provide the behaviors, the simulated tools and the grading functions. This stage adds what the paper's evaluation needs on top: local model folders with working tool calls, an offline judge, the prompting baselines, resumable runs with progress, a result cache keyed by model fingerprint, and a Table-1 report.
- `agentalign.intent`: The refuse-or-act decision of a model, measured on its own and in minutes: from the logits of the rendered first turn, how much more likely the reply opens a tool call than a refusal, for labelled harmful and benign requests; and, from the same forward pass, how well a linear probe on the model's hidden states separates the two (the probe ceiling). `agentalign intent --out RUN --model M --label L`.
- `agentalign.llm.base`: One small async interface for every LLM role of the pipeline (chain writer, instruction writer, judge, agent, refusal writer): requests and responses in the OpenAI chat format, the parsers every backend shares, a concurrent batch helper that never loses an item, a SQLite response cache that makes every stage resumable, and the LLM options every command shares.
- `agentalign.report`: The tables and figures of a run's report, each computed from the files of its run folder: the stages (status, records, time, LLM requests), the cache hit rate, the quality-control funnel, the intent-transfer check, the dataset's composition, the SFT loss curve, the refuse-or-act decision (intent) and AgentHarm before and after fine-tuning."""

__version__ = "0.1.0"
