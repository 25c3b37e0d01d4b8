"""Request and response bodies (pydantic): the OpenAI chat shapes plus pllm's personalization fields, and
the typed memory API. Limits that depend on the server's config are checked in the routes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pllm.types import ProfileItem, parse_timestamp


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- memory -------------------------------------------------------------------------------------------
class ItemIn(_Strict):
    """One memory. `text` is what retrieval and prompts read; `fields` holds any other typed fields."""

    id: str | None = Field(default=None, min_length=1, max_length=256,
                           description="Item id, unique per user (default: a new random id); an existing id "
                                       "is replaced; no '/' (ids are path segments).")
    text: str = Field(min_length=1, description="The memory itself.")
    fields: dict[str, Any] = Field(default_factory=dict, description="Other typed fields (no 'text' key).")
    timestamp: float | str | None = Field(default=None, description="Epoch seconds or an ISO date.")

    @field_validator("id")
    @classmethod
    def _id_addressable(cls, v: str | None) -> str | None:
        if v is not None and "/" in v:
            raise ValueError("item id must not contain '/' (it could not be addressed in a URL path)")
        return v

    @field_validator("text")
    @classmethod
    def _text_not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("text is blank")
        return v

    @field_validator("fields")
    @classmethod
    def _no_text_field(cls, v: dict[str, Any]) -> dict[str, Any]:
        if "text" in v:
            raise ValueError("put the memory in 'text', not in fields")
        return v

    @field_validator("timestamp")
    @classmethod
    def _timestamp(cls, v: float | str | None) -> float | str | None:
        if v is not None and parse_timestamp(v) is None:
            raise ValueError(f"not a timestamp: {v!r} (give epoch seconds or an ISO date)")
        return v

    def to_item(self) -> ProfileItem:
        return ProfileItem(id=self.id or "", fields={"text": self.text, **self.fields},
                           timestamp=parse_timestamp(self.timestamp))


class ItemsIn(_Strict):
    items: list[ItemIn] = Field(min_length=1, description="Items to add in one transaction.")


class ItemOut(BaseModel):
    id: str
    text: str
    fields: dict[str, Any]
    timestamp: float | None

    @classmethod
    def of(cls, item: ProfileItem) -> ItemOut:
        fields = {k: v for k, v in item.fields.items() if k != "text"}
        text = item.fields.get("text")
        return cls(id=item.id, text=text if isinstance(text, str) else "", fields=fields, timestamp=item.timestamp)


class ItemVersionOut(BaseModel):
    version: int
    text: str
    fields: dict[str, Any]
    timestamp: float | None
    replaced_at: float | None = Field(description="When a later write replaced this version (None: current).")


class ItemHistory(BaseModel):
    object: Literal["list"] = "list"
    user: str
    item: str
    data: list[ItemVersionOut]


class ItemsAdded(BaseModel):
    object: Literal["list"] = "list"
    user: str
    data: list[ItemOut]


class ItemsPage(BaseModel):
    object: Literal["list"] = "list"
    user: str
    data: list[ItemOut]
    total: int
    limit: int
    offset: int
    has_more: bool


class SearchHitOut(BaseModel):
    item: ItemOut
    score: float


class SearchOut(BaseModel):
    object: Literal["list"] = "list"
    user: str
    query: str
    retriever: str
    data: list[SearchHitOut]


class Deleted(BaseModel):
    id: str
    object: str
    deleted: bool = True


class UserForgotten(BaseModel):
    id: str
    object: Literal["user"] = "user"
    deleted: bool = True
    rows: dict[str, int]


class UserExport(BaseModel):
    object: Literal["user.export"] = "user.export"
    user: str
    exported_at: float
    items: list[ItemOut]
    n_embeddings: int
    profile_summaries: list[dict[str, Any]]


# -- keys (admin) -------------------------------------------------------------------------------------
class KeyCreate(_Strict):
    tenant: str | None = Field(default=None, description="Tenant of a tenant key (required unless role=admin).")
    role: Literal["tenant", "admin"] = "tenant"
    name: str = Field(default="", max_length=200)


# -- chat (OpenAI) ------------------------------------------------------------------------------------
class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class ChatRequest(BaseModel):
    """OpenAI's chat completion request; unknown OpenAI parameters are accepted and ignored, except the ones
    that would change the answer's shape (`tools`, `response_format` other than text, `logprobs`), refused
    with 400. pllm reads `user` (whose memory personalizes the answer) and the extra fields `retriever`, `k`,
    `profile`, `adapter` (pass them with the openai client's `extra_body=`)."""

    model_config = ConfigDict(extra="ignore")
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    n: int = Field(default=1, ge=1, le=1, description="Only one choice per request is supported.")
    stop: str | list[str] | None = None
    user: str | None = Field(default=None, min_length=1, max_length=256)
    tools: list[Any] | None = Field(default=None, description="Unsupported: refused when given.")
    response_format: dict[str, Any] | None = Field(default=None, description="Only {'type': 'text'}.")
    logprobs: bool | None = Field(default=None, description="Unsupported: refused when true.")
    # pllm personalization (extra fields)
    retriever: str | None = Field(default=None, description="Retriever over the user's memories.")
    k: int | None = Field(default=None, ge=0, description="Memories to retrieve (0: none).")
    profile: bool = Field(default=False, description="Add a cached summary of the user's memories.")
    memory: Literal["off", "raw", "extract"] | None = Field(
        default=None, description="Memory from this chat, written after the answer is sent: 'raw' stores the "
                                  "last user message as an item of `user`, 'extract' also the 'slot: fact' lines "
                                  "the model writes from it; default: the server's --chat-memory.")
    session: str | None = Field(default=None, min_length=1, max_length=256,
                                description="Conversation id kept with stored turns (no '/'); a repeated "
                                            "session and turn replaces the stored turn.")
    adapter: str | None = Field(default=None, description="Personalizer: 'auto' (the first with something for "
                                                          "the user), 'none' (memory only), or a name in "
                                                          "PERSONALIZERS (user-adapter, preference, soft...); "
                                                          "default: the server's --personalizer.")

    @field_validator("session")
    @classmethod
    def _session_addressable(cls, v: str | None) -> str | None:
        if v is not None and "/" in v:
            raise ValueError("session id must not contain '/'")
        return v

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(v) > 4:
            raise ValueError("at most 4 stop sequences")
        return v

    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        return [s for s in ([self.stop] if isinstance(self.stop, str) else self.stop) if s]
