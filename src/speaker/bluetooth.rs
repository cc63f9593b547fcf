//! A Bluetooth speaker through BlueZ (bluer): wait for the adapter, power it
//! on, make sure the device is paired and trusted, connect, then watch BlueZ's
//! property changes (no polling) for the device dropping or disappearing.

use bluer::{AdapterEvent, Address, DeviceEvent, DeviceProperty};
use futures_util::StreamExt;

/// A connected device and what is needed to notice it going away.
pub struct Link {
    adapter: bluer::Adapter,
    device: bluer::Device,
    address: Address,
    // Keeps the D-Bus connection alive.
    _session: bluer::Session,
}

/// Connects to `address`; every failure says which step failed.
pub async fn connect(address: &str) -> Result<Link, String> {
    let addr: Address = address.parse().map_err(|e| format!("`{address}` is not a Bluetooth address: {e}"))?;
    let session =
        bluer::Session::new().await.map_err(|e| format!("cannot reach BlueZ on the D-Bus system bus: {e}"))?;
    let adapter = session.default_adapter().await.map_err(|e| format!("no Bluetooth adapter: {e}"))?;
    adapter.set_powered(true).await.map_err(|e| format!("cannot power on adapter {}: {e}", adapter.name()))?;
    let device = adapter.device(addr).map_err(|e| format!("{addr}: {e}"))?;
    if !device.is_paired().await.map_err(|e| format!("{addr} is not known to adapter {}: {e}", adapter.name()))? {
        device.pair().await.map_err(|e| format!("cannot pair with {addr}: {e}"))?;
    }
    if !device.is_trusted().await.unwrap_or(false) {
        device.set_trusted(true).await.map_err(|e| format!("cannot trust {addr}: {e}"))?;
    }
    if !device.is_connected().await.unwrap_or(false) {
        match device.connect().await {
            Ok(()) => {}
            Err(e) if e.kind == bluer::ErrorKind::AlreadyConnected => {}
            Err(e) => return Err(format!("cannot connect to {addr}: {e}")),
        }
    }
    Ok(Link { adapter, device, address: addr, _session: session })
}

impl Link {
    /// Waits until the device disconnects or is removed; says which.
    pub async fn lost(&self) -> String {
        let device_events = self.device.events().await;
        let adapter_events = self.adapter.events().await;
        let (Ok(mut device_events), Ok(mut adapter_events)) = (device_events, adapter_events) else {
            return format!("{}: cannot watch BlueZ events", self.address);
        };
        loop {
            tokio::select! {
                event = device_events.next() => match event {
                    Some(DeviceEvent::PropertyChanged(DeviceProperty::Connected(false))) => {
                        return format!("{} disconnected", self.address);
                    }
                    Some(_) => {}
                    None => return format!("{} went away", self.address),
                },
                event = adapter_events.next() => match event {
                    Some(AdapterEvent::DeviceRemoved(addr)) if addr == self.address => {
                        return format!("{} was removed from adapter {}", self.address, self.adapter.name());
                    }
                    Some(_) => {}
                    None => return format!("adapter {} went away", self.adapter.name()),
                },
            }
        }
    }
}
