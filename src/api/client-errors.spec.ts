import http from "node:http";
import net from "node:net";
import pino from "pino";
import { SERVER_OPTIONS, answerClientErrorsAsJson } from "./client-errors";

/** A real server with short timers: a client that never finishes its request gets a JSON 408, not an empty one. */
describe("answerClientErrorsAsJson", () => {
  let server: http.Server;
  beforeAll(async () => {
    server = http.createServer(
      { ...SERVER_OPTIONS, headersTimeout: 200, requestTimeout: 200, connectionsCheckingInterval: 50 },
      (_req, res) => res.end("ok"),
    );
    answerClientErrorsAsJson(server, pino({ level: "silent" }));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  });
  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
  });

  it("answers a request that stalls mid-headers with 408 REQUEST_TIMEOUT as JSON", async () => {
    const { port } = server.address() as net.AddressInfo;
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = net.connect(port, "127.0.0.1", () => socket.write("GET / HTTP/1.1\r\nHost: localhost\r\n"));
      let text = "";
      socket.on("data", (c) => (text += c.toString()));
      socket.on("close", () => resolve(text));
      socket.on("error", reject);
    });
    expect(answer).toMatch(/^HTTP\/1\.1 408 Request Timeout\r\n/);
    expect(answer).toMatch(/Content-Type: application\/json/);
    expect(JSON.parse(answer.split("\r\n\r\n")[1])).toEqual({ error: { code: "REQUEST_TIMEOUT", message: expect.any(String) } });
  });
});
