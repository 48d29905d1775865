// @syncline/client: the Syncline SDK for browsers and Node, with Twilio Sync's client API.

export { SyncClient } from "./client.js";
export type { SyncClientOptions, OpenMode, OpenOptions, OpenDocumentOptions, ClientEvents } from "./client.js";
export type { ConnectionState, ConnectionErrorArgs } from "./connection.js";
export { SyncDocument } from "./document.js";
export type { DocumentEvents, WriteOptions } from "./document.js";
export { SyncList, SyncListItem } from "./list.js";
export type { ListEvents } from "./list.js";
export { SyncMap, SyncMapItem } from "./map.js";
export type { MapEvents } from "./map.js";
export { SyncStream } from "./stream.js";
export type { StreamEvents, StreamMessage } from "./stream.js";
export type { ItemWriteOptions, ItemQueryOptions } from "./collection.js";
export type { CommonEvents } from "./entity.js";
export { Paginator } from "./paginator.js";
export { SyncError } from "./errors.js";
export type { SyncErrorCode } from "./errors.js";
export { EventEmitter } from "./emitter.js";
export type { Listener } from "./emitter.js";
export type { LogLevel } from "./log.js";
export type { WebSocketConstructor, WebSocketLike } from "./transport.js";
