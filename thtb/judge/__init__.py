"""LLM judge for THTB stage 2: versioned prompts, strict parsers, a cached OpenAI-compatible client,
the judge backends of the Bloom and discipline scorer interfaces and the AlpaGasus rater."""

from thtb.judge.cache import CacheRecord, RequestCache, make_key
from thtb.judge.client import JudgeResult, OpenAIJudge
from thtb.judge.parsers import ParseError
from thtb.judge.prompts import (
    ALPAGASUS,
    BLOOM,
    BLOOM_LEVEL,
    DISCIPLINE_DESCRIPTION,
    DISCIPLINES,
    TEMPLATES,
    PromptTemplate,
)
from thtb.judge.scorers import JudgeAlpaGasusScorer, JudgeBloomScorer, JudgeDisciplineTagger

__all__ = [
    "ALPAGASUS",
    "BLOOM",
    "BLOOM_LEVEL",
    "DISCIPLINES",
    "DISCIPLINE_DESCRIPTION",
    "TEMPLATES",
    "CacheRecord",
    "JudgeAlpaGasusScorer",
    "JudgeBloomScorer",
    "JudgeDisciplineTagger",
    "JudgeResult",
    "OpenAIJudge",
    "ParseError",
    "PromptTemplate",
    "RequestCache",
    "make_key",
]
