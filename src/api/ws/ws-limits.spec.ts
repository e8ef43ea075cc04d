import { ClientConnections, WS_CLOSE } from "./ws-limits";

describe("ClientConnections", () => {
  it("counts per client, refuses past the cap without counting, and frees a slot on close", () => {
    const conns = new ClientConnections(2);
    expect([conns.tryOpen("a"), conns.tryOpen("a"), conns.tryOpen("a")]).toEqual([true, true, false]);
    expect(conns.tryOpen("b")).toBe(true); // another client has its own count
    conns.closed("a");
    expect(conns.tryOpen("a")).toBe(true);
    expect(conns.tryOpen("a")).toBe(false);
    expect(conns.message()).toMatch(/limit is 2 \(PIXELAI_WS_MAX_CONNECTIONS_PER_CLIENT\)/);
  });

  it("has no cap at 0", () => {
    const conns = new ClientConnections(0);
    for (let i = 0; i < 100; i++) expect(conns.tryOpen("a")).toBe(true);
  });
});

describe("WS_CLOSE", () => {
  it("uses the application's range of close codes (RFC 6455 §7.4.2)", () => {
    for (const code of Object.values(WS_CLOSE)) expect(code >= 4000 && code <= 4999).toBe(true);
  });
});
