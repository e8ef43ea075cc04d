import http from "node:http";
import type { Duplex } from "node:stream";
import type { ErrorCode } from "../backends/error-codes";
import type { Logger } from "../infra/logger";

/** What Node's HTTP parser or its timers reject, as the taxonomy names it. */
function classify(err: NodeJS.ErrnoException): [number, ErrorCode, string] {
  if (err.code === "HPE_HEADER_OVERFLOW") return [431, "HEADERS_TOO_LARGE", "request headers are too large"];
  if (err.code === "ERR_HTTP_REQUEST_TIMEOUT") return [408, "REQUEST_TIMEOUT", "the request was not received in time"];
  return [400, "INVALID_REQUEST", `malformed HTTP request (${err.code ?? "parse error"})`];
}

/**
 * Node answers requests it cannot parse (bad framing, oversized headers, a client too slow to send its request) itself,
 * with an empty body, unless the server handles `clientError`. Here they get the same JSON error shape as every other
 * answer. A socket already gone or half-answered is only closed: there is nobody left to tell.
 */
export function answerClientErrorsAsJson(server: http.Server, logger: Logger): void {
  server.on("clientError", (err: NodeJS.ErrnoException, socket: Duplex) => {
    if (err.code === "ECONNRESET" || !socket.writable) {
      socket.destroy();
      return;
    }
    const [status, code, message] = classify(err);
    logger.debug({ code: err.code, status }, "client error answered");
    const body = JSON.stringify({ error: { code, message } });
    socket.end(
      `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nContent-Type: application/json; charset=utf-8\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  });
}

/**
 * Node refuses an HTTP/1.1 request without `Host` with an empty 400 before any handler runs; turned off so that the
 * host check (host-check.ts) refuses it with a JSON body instead.
 */
export const SERVER_OPTIONS: http.ServerOptions = { requireHostHeader: false };
