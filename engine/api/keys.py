"""Typed application keys: everything a handler needs is reachable through one of these."""

from aiohttp import web

from engine.api.auth import Auth
from engine.config import Settings
from engine.delivery.links import LinkSecret
from engine.metrics import Metrics
from engine.policy.ref import PolicyRef
from engine.processor import Processor
from engine.reload import Reloader
from engine.store.base import Store
from engine.storewatch import StoreWatch

settings = web.AppKey("settings", Settings)
store = web.AppKey("store", Store)
processor = web.AppKey("processor", Processor)
metrics = web.AppKey("metrics", Metrics)
auth = web.AppKey("auth", Auth)
policies = web.AppKey("policies", PolicyRef)
reloader = web.AppKey("reloader", Reloader)
link_secret = web.AppKey("link_secret", LinkSecret)
store_watch = web.AppKey("store_watch", StoreWatch)
