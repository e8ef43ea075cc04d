import net from "node:net";
import { assertPortFree, PortBusyError, portHolder } from "./port-check";

function listen(host: string, port = 0): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(port, host, () => resolve(srv));
  });
}

const portOf = (srv: net.Server) => (srv.address() as net.AddressInfo).port;

describe("port check", () => {
  it("passes a free port and leaves it free (the check's own bind is closed again)", async () => {
    const probe = await listen("127.0.0.1");
    const port = portOf(probe);
    await new Promise((r) => probe.close(r));
    await assertPortFree("127.0.0.1", port);
    const again = await listen("127.0.0.1", port);
    expect(portOf(again)).toBe(port);
    await new Promise((r) => again.close(r));
    await expect(assertPortFree("127.0.0.1", 0)).resolves.toBeUndefined();
  });

  it("refuses a port in use and names the process holding it, when the system lets us see it", async () => {
    const srv = await listen("127.0.0.1");
    try {
      const port = portOf(srv);
      const error = await assertPortFree("127.0.0.1", port).then(
        () => undefined,
        (err: unknown) => err,
      );
      expect(error).toBeInstanceOf(PortBusyError);
      expect((error as Error).message).toMatch(new RegExp(`^port ${port} on 127\\.0\\.0\\.1 is already in use`));
      expect((error as Error).message).toMatch(/; stop it first or set PORT$/);
      if (process.platform === "linux") {
        // /proc shows our own sockets, so here the holder is always known: this very process.
        expect((error as PortBusyError).holderPid).toBe(process.pid);
        expect((error as Error).message).toContain(`by pid ${process.pid} (`);
        expect(portHolder(port)?.command).toContain("node");
      }
    } finally {
      await new Promise((r) => srv.close(r));
    }
  });

  it("reports no holder for a port nobody listens on", async () => {
    const srv = await listen("127.0.0.1");
    const port = portOf(srv);
    await new Promise((r) => srv.close(r));
    expect(portHolder(port)).toBeUndefined();
  });

  it("says why when the address cannot be bound at all", async () => {
    // 192.0.2.1 (TEST-NET-1) is never a local address.
    await expect(assertPortFree("192.0.2.1", 5000)).rejects.toThrow(
      /^cannot listen on 192\.0\.2\.1:5000: EADDRNOTAVAIL; set HOST \/ PORT$/,
    );
  });
});
