// Appended to a copy of a Snakemake report by test_report.py: opens every result the way a
// reader's clicks do and records what the page then shows as JSON in the body's data-probe
// attribute, which Chromium's --dump-dom returns. Ends showing the result named in the URL's
// #fragment, for the screenshot.
(async function () {
    const pause = () => new Promise((resolve) => setTimeout(resolve, 100));
    const shown = {};
    try {
        while (typeof app === "undefined") {  // React builds the app after this script runs
            await pause();
        }
        for (const [category, subcategories] of Object.entries(categories)) {
            for (const [subcategory, paths] of Object.entries(subcategories)) {
                // through the menu, as a click does: the results table is built when it mounts
                app.setView({ navbarMode: "menu" });
                await pause();
                app.setView({ navbarMode: "subcategory", category, subcategory });
                await pause();
                const table = document.querySelector("nav table tbody").innerText;
                for (const path of paths) {
                    const entry = results[path];
                    const record = { category, subcategory, table, mime: entry.mime_type };
                    app.showResultInfo(path);
                    await pause();
                    record.info = document.querySelector("nav").innerText;
                    if (entry.mime_type.startsWith("image/")) {
                        new ToggleViewManager(app).handleSelectedResult(path);
                        await pause();
                        const image = document.querySelector("#app img[src='" + entry.data_uri + "']");
                        if (image) {
                            // not image.decode(): under virtual time it can wait for ever
                            for (let tries = 0; tries < 50 && !image.complete; tries++) {
                                await pause();
                            }
                            record.width = image.naturalWidth;
                            record.height = image.naturalHeight;
                        }
                    } else if (entry.mime_type.startsWith("video/")) {
                        // the report offers a video for download; the browser must still play it
                        const video = document.createElement("video");
                        const loaded = new Promise((resolve) => {
                            video.onloadeddata = resolve;
                            video.onerror = resolve;
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
            app.setView({ navbarMode: "menu" });
            await pause();
            app.showResultInfo(last);
            new ToggleViewManager(app).handleSelectedResult(last);
        }
        document.body.setAttribute("data-probe", JSON.stringify(shown));
    } catch (error) {
        document.body.setAttribute("data-probe-error", String(error.stack || error));
    }
})();
