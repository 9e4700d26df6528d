"""LLM judge for THTB stage 2: versioned prompts, strict parsers, a cached OpenAI-compatible client
and the judge backends of the Bloom and discipline scorer interfaces."""

from thtb.judge.cache import CacheRecord, RequestCache, make_key
from thtb.judge.client import JudgeResult, OpenAIJudge
from thtb.judge.parsers import ParseError
from thtb.judge.prompts import BLOOM, BLOOM_LEVEL, DISCIPLINE_DESCRIPTION, DISCIPLINES, TEMPLATES, PromptTemplate
from thtb.judge.scorers import JudgeBloomScorer, JudgeDisciplineTagger

__all__ = [
    "BLOOM",
    "BLOOM_LEVEL",
    "DISCIPLINES",
    "DISCIPLINE_DESCRIPTION",
    "TEMPLATES",
    "CacheRecord",
    "JudgeBloomScorer",
    "JudgeDisciplineTagger",
    "JudgeResult",
    "OpenAIJudge",
    "ParseError",
    "PromptTemplate",
    "RequestCache",
    "make_key",
]
