"""The agent's system prompt on τ-bench (tau2's agent template with our reply rule) and the progress instruction."""
from __future__ import annotations

from .tau2_tasks import load_tasks  # noqa: F401  (doctest)


# how the agent answers on τ-bench: tools or a message to the user, one per step ({call_format}: context.call_format)
REPLY_RULE = ("In each step you do exactly one of two things: call tools, answering with only the calls in the format "
              "{call_format}; or write a message to the user, answering with the message text only (it ends your "
              "turn, and the user replies).")
COT_RULE = ("Before your answer, think step by step about what the user asked, what the policy allows, what has been "
            "done and what remains, inside <think>...</think>; then write the calls or your message to the user.")


def agent_prompt(task, style: str = "python", prompting: str = "plain", tool_docs: str = "full") -> str:
    """The agent's system prompt on τ-bench: tau2's own template (``tau2.agent.llm_agent.SYSTEM_PROMPT``:
    ``<instructions>`` then ``<policy>`` with the domain policy) with our instruction in place of tau2's (its persona
    and closing lines, and :data:`REPLY_RULE` in our call format instead of its JSON tool-call API), then the tool docs
    (:func:`parl_mt_lib.context.tools_section`).

    >>> (t,) = load_tasks("airline", "test", limit=1)
    >>> text = agent_prompt(t, tool_docs="minimal")
    >>> print(text[:text.index("</instructions>") + 15])
    <instructions>
    You are a customer service agent that helps the user according to the <policy> provided below.
    In each step you do exactly one of two things: call tools, answering with only the calls in the format [func(param=value)]; or write a message to the user, answering with the message text only (it ends your turn, and the user replies).
    Try to be helpful and always follow the policy.
    </instructions>
    >>> t.instructions in text
    True
    """
    from tau2.agent.llm_agent import AGENT_INSTRUCTION, SYSTEM_PROMPT

    from ..context import call_format, check_prompt_options, tools_section

    check_prompt_options(style, prompting, tool_docs)
    lines = AGENT_INSTRUCTION.splitlines()
    # its last line, less "Always make sure you generate valid JSON only." (its API's tool calls; ours: REPLY_RULE)
    closing = lines[-1].split(". ")[0].rstrip(".") + "."
    rule = REPLY_RULE.format(call_format=call_format(style, tool_docs))
    instruction = "\n".join([lines[0], rule] + ([COT_RULE] if prompting == "cot" else []) + [closing])
    text = SYSTEM_PROMPT.format(agent_instruction=instruction, domain_policy=task.instructions)
    tools = tools_section(task.functions, style, tool_docs)
    return text + ("\n\n" + tools.rstrip("\n") if tools else "")


def progress_instruction(short: bool = False) -> str:
    """PARL-MT's progress instruction with the τ-bench action: the calls, or the message to the user.

    >>> progress_instruction(short=True)
    'First write <summary>...</summary> and <plan>...</plan>, then the calls or your message to the user.'
    """
    from ..progress_format import INSTRUCTION, INSTRUCTION_SHORT

    if short:
        return INSTRUCTION_SHORT.rstrip(".") + " or your message to the user."
    return INSTRUCTION.split("; then ")[0] + "; then output the function calls or your message to the user."
