#!/usr/bin/env python3
"""What a desktop session gives the app that Xvfb and a bare D-Bus session do not: a tray host,
a notification server and a window manager's close button. Used by tests/stories/desktop.sh and
tests/e2e/desktop.py.

    desktop_hosts.py serve NOTIFICATIONS READY
        Owns org.kde.StatusNotifierWatcher (where the app's tray icon, a StatusNotifierItem
        exported by libayatana-appindicator, registers) and org.freedesktop.Notifications (where
        the app's notifications go), appends each notification received to NOTIFICATIONS as one
        JSON line, and creates READY once it owns both names. Runs until killed.
    desktop_hosts.py items
        The registered tray items as JSON: [{"item", "pid", "props"}], `props` being the item's
        org.kde.StatusNotifierItem properties (Id, Status, IconName, XAyatanaLabel, Menu, ...).
    desktop_hosts.py menu
        The first item's menu, read through com.canonical.dbusmenu GetLayout, flattened to a JSON
        list of {"id", "depth", "label", "type", "enabled", "visible", "toggle-type",
        "toggle-state"} (dbusmenu's defaults filled in; mnemonic underscores removed).
    desktop_hosts.py click ID
        Sends the menu item ID the event a tray host sends when the person clicks it.
    desktop_hosts.py close-window TITLE
        Asks the top-level X window named TITLE to close, as a window manager's close button does
        (a WM_DELETE_WINDOW client message; Xvfb runs no window manager).
    desktop_hosts.py window TITLE
        Prints "viewable", "unmapped" or "absent": the state of the X window named TITLE.

Needs PyGObject (Debian: python3-gi, in scripts/lib/packages.txt) for D-Bus, and libX11 through
ctypes for the window commands. The D-Bus commands use the session bus of $DBUS_SESSION_BUS_ADDRESS;
the window commands the display of $DISPLAY. Errors go to stderr with exit status 1.
"""
import ctypes
import ctypes.util
import json
import os
import pathlib
import sys
import time

from gi.repository import Gio, GLib

WATCHER = "org.kde.StatusNotifierWatcher"
WATCHER_PATH = "/StatusNotifierWatcher"
ITEM = "org.kde.StatusNotifierItem"
NOTIFICATIONS = "org.freedesktop.Notifications"
NOTIFICATIONS_PATH = "/org/freedesktop/Notifications"
DBUSMENU = "com.canonical.dbusmenu"
PROPERTIES = "org.freedesktop.DBus.Properties"

INTERFACES = Gio.DBusNodeInfo.new_for_xml("""
<node>
  <interface name="org.kde.StatusNotifierWatcher">
    <method name="RegisterStatusNotifierItem"><arg name="service" type="s" direction="in"/></method>
    <method name="RegisterStatusNotifierHost"><arg name="service" type="s" direction="in"/></method>
    <property name="RegisteredStatusNotifierItems" type="as" access="read"/>
    <property name="IsStatusNotifierHostRegistered" type="b" access="read"/>
    <property name="ProtocolVersion" type="i" access="read"/>
    <signal name="StatusNotifierItemRegistered"><arg type="s"/></signal>
    <signal name="StatusNotifierItemUnregistered"><arg type="s"/></signal>
    <signal name="StatusNotifierHostRegistered"/>
  </interface>
  <interface name="org.freedesktop.Notifications">
    <method name="GetCapabilities"><arg type="as" direction="out"/></method>
    <method name="Notify">
      <arg name="app_name" type="s" direction="in"/>
      <arg name="replaces_id" type="u" direction="in"/>
      <arg name="app_icon" type="s" direction="in"/>
      <arg name="summary" type="s" direction="in"/>
      <arg name="body" type="s" direction="in"/>
      <arg name="actions" type="as" direction="in"/>
      <arg name="hints" type="a{sv}" direction="in"/>
      <arg name="expire_timeout" type="i" direction="in"/>
      <arg name="id" type="u" direction="out"/>
    </method>
    <method name="CloseNotification"><arg name="id" type="u" direction="in"/></method>
    <method name="GetServerInformation">
      <arg name="name" type="s" direction="out"/>
      <arg name="vendor" type="s" direction="out"/>
      <arg name="version" type="s" direction="out"/>
      <arg name="spec_version" type="s" direction="out"/>
    </method>
    <signal name="NotificationClosed"><arg type="u"/><arg type="u"/></signal>
    <signal name="ActionInvoked"><arg type="u"/><arg type="s"/></signal>
  </interface>
</node>""")


def fail(message: str) -> None:
    print(f"desktop_hosts: {message}", file=sys.stderr)
    sys.exit(1)


# --- the hosts ---------------------------------------------------------------------------------


class Hosts:
    """The watcher and the notification server on one connection, served by a GLib main loop."""

    def __init__(self, bus: Gio.DBusConnection, notifications: pathlib.Path, ready: pathlib.Path):
        self.bus, self.log, self.ready = bus, notifications, ready
        self.items: list[str] = []  # "<bus name><object path>", as other watchers list them
        self.watches: dict[str, int] = {}
        self.next_id = 1
        self.owned: set[str] = set()
        watcher, server = INTERFACES.interfaces
        bus.register_object(WATCHER_PATH, watcher, self.on_watcher_call, self.watcher_property,
                            None)
        bus.register_object(NOTIFICATIONS_PATH, server, self.on_notifications_call, None, None)
        for name in (WATCHER, NOTIFICATIONS):
            Gio.bus_own_name_on_connection(bus, name, Gio.BusNameOwnerFlags.DO_NOT_QUEUE,
                                           self.acquired, self.lost)

    def acquired(self, _bus, name: str) -> None:
        self.owned.add(name)
        if self.owned == {WATCHER, NOTIFICATIONS}:
            self.ready.touch()

    def lost(self, _bus, name: str) -> None:
        # Out of the main loop at once: an exception in a callback would only be printed.
        print(f"desktop_hosts: lost {name} (another owner, or the bus went away)",
              file=sys.stderr, flush=True)
        os._exit(1)

    def emit(self, signal: str, args) -> None:
        self.bus.emit_signal(None, WATCHER_PATH, WATCHER, signal, args)

    def watcher_property(self, _bus, _sender, _path, _interface, name: str):
        return {
            "RegisteredStatusNotifierItems": GLib.Variant("as", self.items),
            "IsStatusNotifierHostRegistered": GLib.Variant("b", True),
            "ProtocolVersion": GLib.Variant("i", 0),
        }.get(name)

    def on_watcher_call(self, _bus, sender, _path, _interface, method, params, invocation):
        if method == "RegisterStatusNotifierItem":
            (service,) = params.unpack()
            # libayatana-appindicator passes its object path; others pass a bus name.
            if service.startswith("/"):
                name, path = sender, service
            else:
                name, path = service, "/StatusNotifierItem"
            item = name + path
            if item not in self.items:
                self.items.append(item)
                self.emit("StatusNotifierItemRegistered", GLib.Variant("(s)", (item,)))
            if name not in self.watches:
                self.watches[name] = Gio.bus_watch_name_on_connection(
                    self.bus, name, Gio.BusNameWatcherFlags.NONE, None, self.vanished)
        elif method == "RegisterStatusNotifierHost":
            self.emit("StatusNotifierHostRegistered", None)
        invocation.return_value(None)

    def vanished(self, _bus, name: str) -> None:
        """A process that registered items left the bus: its items go with it."""
        Gio.bus_unwatch_name(self.watches.pop(name))
        for item in [i for i in self.items if i.startswith(name + "/")]:
            self.items.remove(item)
            self.emit("StatusNotifierItemUnregistered", GLib.Variant("(s)", (item,)))

    def on_notifications_call(self, _bus, sender, _path, _interface, method, params,
                              invocation):
        if method == "GetCapabilities":
            invocation.return_value(GLib.Variant("(as)", (["body", "actions", "persistence"],)))
        elif method == "GetServerInformation":
            invocation.return_value(
                GLib.Variant("(ssss)", ("latchkey-e2e", "Latchkey tests", "1", "1.2")))
        elif method == "CloseNotification":
            (number,) = params.unpack()
            self.bus.emit_signal(None, NOTIFICATIONS_PATH, NOTIFICATIONS, "NotificationClosed",
                                 GLib.Variant("(uu)", (number, 3)))
            invocation.return_value(None)
        elif method == "Notify":
            app_name, replaces, icon, summary, body, actions, hints, timeout = params.unpack()
            number = replaces or self.next_id
            self.next_id = max(self.next_id, number + 1)
            record = {
                "id": number, "sender": sender, "app_name": app_name, "app_icon": icon,
                "summary": summary, "body": body, "actions": actions, "expire_timeout": timeout,
                # Plain hints only: image data is pixels, not words.
                "hints": {k: v for k, v in hints.items() if isinstance(v, (str, int, bool))},
                "received_at": time.time(),
            }
            with self.log.open("a", encoding="utf-8") as out:
                out.write(json.dumps(record) + "\n")
            invocation.return_value(GLib.Variant("(u)", (number,)))


def serve(notifications: str, ready: str) -> None:
    bus = Gio.bus_get_sync(Gio.BusType.SESSION, None)
    pathlib.Path(notifications).touch()
    Hosts(bus, pathlib.Path(notifications), pathlib.Path(ready))
    GLib.MainLoop().run()


# --- reading the tray over D-Bus -----------------------------------------------------------------


def call(bus, name: str, path: str, interface: str, method: str, args=None, reply=None):
    return bus.call_sync(name, path, interface, method, args,
                         None if reply is None else GLib.VariantType(reply),
                         Gio.DBusCallFlags.NONE, 5000, None).unpack()


def items(bus) -> list:
    (registered,) = call(bus, WATCHER, WATCHER_PATH, PROPERTIES, "Get",
                         GLib.Variant("(ss)", (WATCHER, "RegisteredStatusNotifierItems")), "(v)")
    found = []
    for item in registered:
        slash = item.index("/")
        name, path = item[:slash], item[slash:]
        (pid,) = call(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                      "org.freedesktop.DBus", "GetConnectionUnixProcessID",
                      GLib.Variant("(s)", (name,)), "(u)")
        (props,) = call(bus, name, path, PROPERTIES, "GetAll", GLib.Variant("(s)", (ITEM,)),
                        "(a{sv})")
        plain = {k: v for k, v in props.items() if isinstance(v, (str, int, bool))}
        found.append({"item": item, "name": name, "path": path, "pid": pid, "props": plain})
    return found


def menu(bus) -> list:
    found = items(bus)
    if not found:
        fail("no tray item is registered")
    first = found[0]
    menu_path = first["props"].get("Menu")
    if not menu_path:
        fail(f"the tray item exports no menu: {first['props']}")
    _revision, layout = call(bus, first["name"], menu_path, DBUSMENU, "GetLayout",
                             GLib.Variant("(iias)", (0, -1, [])), "(u(ia{sv}av))")
    entries: list = []

    def walk(node, depth: int) -> None:
        number, props, children = node
        if depth > 0:
            entries.append({
                "id": number, "depth": depth,
                "label": props.get("label", "").replace("__", "\0").replace("_", "")
                .replace("\0", "_"),
                "type": props.get("type", "standard"),
                "enabled": props.get("enabled", True),
                "visible": props.get("visible", True),
                "toggle-type": props.get("toggle-type", ""),
                "toggle-state": props.get("toggle-state", -1),
            })
        for child in children:
            walk(child, depth + 1)

    walk(layout, 0)
    return entries


def click(bus, number: int) -> None:
    found = items(bus)
    if not found:
        fail("no tray item is registered")
    first = found[0]
    call(bus, first["name"], first["props"]["Menu"], DBUSMENU, "Event",
         GLib.Variant("(isvu)", (number, "clicked", GLib.Variant("i", 0), int(time.time()))))


# --- the window manager's part, through libX11 -------------------------------------------------


class ClientMessage(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("serial", ctypes.c_ulong), ("send_event", ctypes.c_int),
                ("display", ctypes.c_void_p), ("window", ctypes.c_ulong),
                ("message_type", ctypes.c_ulong), ("format", ctypes.c_int),
                ("data", ctypes.c_long * 5)]


class XEvent(ctypes.Union):
    _fields_ = [("client", ClientMessage), ("pad", ctypes.c_long * 24)]


class WindowAttributes(ctypes.Structure):
    _fields_ = [("x", ctypes.c_int), ("y", ctypes.c_int), ("width", ctypes.c_int),
                ("height", ctypes.c_int), ("border_width", ctypes.c_int),
                ("depth", ctypes.c_int), ("visual", ctypes.c_void_p), ("root", ctypes.c_ulong),
                ("class", ctypes.c_int), ("bit_gravity", ctypes.c_int),
                ("win_gravity", ctypes.c_int), ("backing_store", ctypes.c_int),
                ("backing_planes", ctypes.c_ulong), ("backing_pixel", ctypes.c_ulong),
                ("save_under", ctypes.c_int), ("colormap", ctypes.c_ulong),
                ("map_installed", ctypes.c_int), ("map_state", ctypes.c_int),
                ("all_event_masks", ctypes.c_long), ("your_event_mask", ctypes.c_long),
                ("do_not_propagate_mask", ctypes.c_long), ("override_redirect", ctypes.c_int),
                ("screen", ctypes.c_void_p)]


def xlib():
    x = ctypes.CDLL(ctypes.util.find_library("X11") or "libX11.so.6")
    x.XOpenDisplay.restype = ctypes.c_void_p
    x.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x.XDefaultRootWindow.restype = ctypes.c_ulong
    x.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
    x.XQueryTree.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.POINTER(ctypes.c_ulong),
                             ctypes.POINTER(ctypes.c_ulong),
                             ctypes.POINTER(ctypes.POINTER(ctypes.c_ulong)),
                             ctypes.POINTER(ctypes.c_uint)]
    x.XFetchName.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.POINTER(ctypes.c_char_p)]
    x.XFree.argtypes = [ctypes.c_void_p]
    x.XInternAtom.restype = ctypes.c_ulong
    x.XInternAtom.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    x.XSendEvent.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_long,
                             ctypes.POINTER(XEvent)]
    x.XGetWindowAttributes.argtypes = [ctypes.c_void_p, ctypes.c_ulong,
                                       ctypes.POINTER(WindowAttributes)]
    x.XFlush.argtypes = x.XCloseDisplay.argtypes = [ctypes.c_void_p]
    display = x.XOpenDisplay(None)
    if not display:
        fail("cannot open the X display ($DISPLAY)")
    return x, display


def find_window(x, display, title: str):
    """The top-level window named `title`: a child of the root window, there being no window
    manager to reparent it."""
    root, parent = ctypes.c_ulong(), ctypes.c_ulong()
    children, count = ctypes.POINTER(ctypes.c_ulong)(), ctypes.c_uint()
    if not x.XQueryTree(display, x.XDefaultRootWindow(display), ctypes.byref(root),
                        ctypes.byref(parent), ctypes.byref(children), ctypes.byref(count)):
        return None
    try:
        for i in range(count.value):
            name = ctypes.c_char_p()
            if x.XFetchName(display, children[i], ctypes.byref(name)) and name.value:
                matches = name.value.decode(errors="replace") == title
                x.XFree(name)
                if matches:
                    return children[i]
    finally:
        if children:
            x.XFree(children)
    return None


def window_state(title: str) -> str:
    x, display = xlib()
    window = find_window(x, display, title)
    if window is None:
        return "absent"
    attributes = WindowAttributes()
    x.XGetWindowAttributes(display, window, ctypes.byref(attributes))
    x.XCloseDisplay(display)
    return {0: "unmapped", 1: "unmapped", 2: "viewable"}.get(attributes.map_state, "unmapped")


def close_window(title: str) -> None:
    x, display = xlib()
    window = find_window(x, display, title)
    if window is None:
        fail(f"no top-level window is named {title!r}")
    event = XEvent()
    event.client.type = 33  # ClientMessage
    event.client.window = window
    event.client.message_type = x.XInternAtom(display, b"WM_PROTOCOLS", 0)
    event.client.format = 32
    event.client.data[0] = x.XInternAtom(display, b"WM_DELETE_WINDOW", 0)
    event.client.data[1] = 0  # CurrentTime
    if not x.XSendEvent(display, window, 0, 0, ctypes.byref(event)):
        fail("the close request could not be sent")
    x.XFlush(display)
    x.XCloseDisplay(display)


def main(argv: list) -> None:
    command, args = (argv[0], argv[1:]) if argv else ("", [])
    if command == "serve" and len(args) == 2:
        serve(*args)
    elif command in ("items", "menu") and not args:
        bus = Gio.bus_get_sync(Gio.BusType.SESSION, None)
        print(json.dumps(items(bus) if command == "items" else menu(bus)))
    elif command == "click" and len(args) == 1 and args[0].isdigit():
        click(Gio.bus_get_sync(Gio.BusType.SESSION, None), int(args[0]))
    elif command == "close-window" and len(args) == 1:
        close_window(args[0])
    elif command == "window" and len(args) == 1:
        print(window_state(args[0]))
    else:
        fail(f"unknown command {' '.join(argv)!r}; see this file's docstring")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except GLib.Error as error:
        fail(error.message)
