// Appended to a copy of a Snakemake report by test_report.py: opens every result the way a
// reader's clicks do and resolves window.reportProbe with what the page then shows, by result
// path; the test awaits it over the DevTools protocol. Ends showing the result named in the URL's
// #fragment, for the screenshot. Every step waits for the event that ends it, never for a time,
// so the outcome does not depend on the machine's speed.
window.reportProbe = (async function () {
    // React renders a change of view in a later task; flushSync renders it before returning, so
    // what the probe reads next is already the new view
    const show = (change) => ReactDOM.flushSync(change);
    // the result's image in the content pane, once the browser has decoded it (rejects if it
    // cannot); null when the pane does not show it
    const shownImage = async (entry) => {
        const image = document.querySelector("#app img[src='" + entry.data_uri + "']");
        if (image) {
            await image.decode();
        }
        return image;
    };
    // React builds the app in a task after this script runs
    while (typeof app === "undefined" || !document.querySelector("#app nav")) {
        await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const shown = {};
    for (const [category, subcategories] of Object.entries(categories)) {
        for (const [subcategory, paths] of Object.entries(subcategories)) {
            // through the menu, as a click does: the results table is built when it mounts
            show(() => app.setView({ navbarMode: "menu" }));
            show(() => app.setView({ navbarMode: "subcategory", category, subcategory }));
            const table = document.querySelector("nav table tbody").innerText;
            for (const path of paths) {
                const entry = results[path];
                const record = { category, subcategory, table, mime: entry.mime_type };
                show(() => app.showResultInfo(path));
                record.info = document.querySelector("nav").innerText;
                if (entry.mime_type.startsWith("image/")) {
                    show(() => new ToggleViewManager(app).handleSelectedResult(path));
                    const image = await shownImage(entry);
                    if (image) {
                        record.width = image.naturalWidth;
                        record.height = image.naturalHeight;
                    }
                } else if (entry.mime_type.startsWith("video/")) {
                    // the report offers a video for download; the browser must still play it
                    const video = document.createElement("video");
                    const loaded = new Promise((resolve) => {
                        video.onloadeddata = resolve;
                        video.onerror = () => {
                            record.error = video.error.message || "code " + video.error.code;
                            resolve();
                        };
                    });
                    video.muted = true;
                    video.src = entry.data_uri;
                    document.body.appendChild(video);  // a detached video loads nothing here
                    await loaded;
                    video.remove();
                    record.width = video.videoWidth;
                    record.height = video.videoHeight;
                    record.duration = video.duration;
                } else {
                    record.text = await (await fetch(entry.data_uri)).text();
                }
                shown[path] = record;
            }
        }
    }
    const last = decodeURIComponent(location.hash.slice(1));
    if (last in results) {
        // its own category and subcategory, or the breadcrumbs name the last ones walked
        const [category, subcategory] = Object.entries(categories).flatMap(([category, subs]) =>
            Object.entries(subs)
                .filter(([, paths]) => paths.includes(last))
                .map(([subcategory]) => [category, subcategory]),
        )[0];
        show(() => app.setView({ navbarMode: "menu" }));
        show(() => app.setView({ navbarMode: "subcategory", category, subcategory }));
        show(() => app.showResultInfo(last));
        show(() => new ToggleViewManager(app).handleSelectedResult(last));
        await shownImage(results[last]);
    }
    return shown;
})();
