"""LLM judge for THTB stage 2: versioned prompts, strict parsers, a persistent request cache, three
backends behind one interface (OpenAI-compatible HTTP, in-process transformers, in-process vLLM),
the judge backends of the Bloom and discipline scorer interfaces and the AlpaGasus rater."""

from thtb.judge.cache import CacheRecord, RequestCache, make_key
from thtb.judge.base import JudgeBackend, JudgeResult
from thtb.judge.client import OpenAIJudge
from thtb.judge.local import HFJudge, VLLMJudge
from thtb.judge.parsers import ParseError
from thtb.judge.prompts import (ALPAGASUS, BLOOM, BLOOM_LEVEL, DISCIPLINE_DESCRIPTION, DISCIPLINES, TEMPLATES,
                                PromptTemplate)
from thtb.judge.scorers import JudgeAlpaGasusScorer, JudgeBloomScorer, JudgeDisciplineTagger

__all__ = ["ALPAGASUS", "BLOOM", "BLOOM_LEVEL", "DISCIPLINES", "DISCIPLINE_DESCRIPTION", "TEMPLATES", "CacheRecord",
           "HFJudge", "JudgeBackend", "JudgeAlpaGasusScorer", "JudgeBloomScorer", "JudgeDisciplineTagger",
           "JudgeResult", "OpenAIJudge", "ParseError", "PromptTemplate", "RequestCache", "VLLMJudge", "make_key"]
